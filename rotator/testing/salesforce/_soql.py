"""A small SOQL subset: parse, check against the emulated org's schema, run.

Grammar (keywords case-insensitive, as in SOQL)::

    SELECT field [, field ...] | COUNT()
    FROM object
    [WHERE field op literal [AND field op literal ...]]   op: = or !=
    [LIMIT n]

Literals: 'string' (backslash escapes), true, false, null, integers. String comparisons are
case-insensitive, as in SOQL. Anything else is MALFORMED_QUERY; an unknown object is
INVALID_TYPE and an unknown field INVALID_FIELD, with Salesforce's message text (the query,
a caret under the culprit, ``ERROR at Row:R:Column:C`` and the reason).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rotator.testing.salesforce._org import Field, SObject, sobject

MAX_SOQL_LENGTH = 20_000  # Salesforce allows 100,000; a test double needs far less
MAX_CONDITIONS = 20
MAX_FIELDS = 100

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^'\\]|\\.)*')
      | (?P<number>-?\d+)
      | (?P<name>[A-Za-z_][A-Za-z0-9_.]*)
      | (?P<op>!=|<>|<=|>=|=|<|>)
      | (?P<punct>[,()])
    )""",
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "'": "'", '"': '"', "\\": "\\"}


class SoqlError(Exception):
    """A query Salesforce would refuse: `error_code` and its message, as the REST API sends them."""

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message


@dataclass(frozen=True)
class Condition:
    field: Field
    negate: bool
    value: Any


@dataclass(frozen=True)
class Query:
    sobject: SObject
    fields: tuple[Field, ...]  # empty for COUNT()
    count: bool
    conditions: tuple[Condition, ...]
    limit: int | None

    def matches(self, record: dict[str, Any]) -> bool:
        return all(_compare(record.get(c.field.name), c.value) != c.negate for c in self.conditions)


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    at: int


def parse(soql: str) -> Query:
    """The query `soql` asks for, checked against the schema; SoqlError when refused."""
    if len(soql) > MAX_SOQL_LENGTH:
        message = f"SOQL statements cannot be longer than {MAX_SOQL_LENGTH} characters"
        raise SoqlError("MALFORMED_QUERY", message)
    return _Parser(soql).query()


def _compare(stored: Any, literal: Any) -> bool:
    if isinstance(stored, str) and isinstance(literal, str):
        return stored.lower() == literal.lower()
    if isinstance(stored, bool) or isinstance(literal, bool):
        return stored is literal
    return bool(stored == literal)


class _Parser:
    def __init__(self, soql: str) -> None:
        self.soql = soql
        self.tokens = self._tokenize()
        self.position = 0

    def _tokenize(self) -> list[_Token]:
        tokens: list[_Token] = []
        index = 0
        text = self.soql
        while index < len(text):
            if text[index:].strip() == "":
                break
            match = _TOKEN.match(text, index)
            if match is None or match.end() == index:
                start = len(text) - len(text[index:].lstrip())
                raise self._error(start, "MALFORMED_QUERY", f"unexpected token: '{text[start]}'")
            kind = match.lastgroup or ""
            tokens.append(_Token(kind, match.group(kind), match.start(kind)))
            index = match.end()
        return tokens

    # ---- helpers

    def _error(self, at: int, code: str, reason: str) -> SoqlError:
        row = self.soql.count("\n", 0, at) + 1
        line_start = self.soql.rfind("\n", 0, at) + 1
        line_end = self.soql.find("\n", at)
        line = self.soql[line_start:line_end if line_end >= 0 else len(self.soql)]
        column = at - line_start
        return SoqlError(code, f"\n{line}\n{' ' * column}^\nERROR at Row:{row}:Column:{column + 1}\n{reason}")

    def _peek(self) -> _Token | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _next(self) -> _Token:
        token = self._peek()
        if token is None:
            raise self._error(len(self.soql.rstrip()), "MALFORMED_QUERY", "unexpected token: <EOF>")
        self.position += 1
        return token

    def _unexpected(self, token: _Token) -> SoqlError:
        return self._error(token.at, "MALFORMED_QUERY", f"unexpected token: '{token.text}'")

    def _keyword(self, word: str) -> _Token:
        token = self._next()
        if token.kind != "name" or token.text.upper() != word:
            raise self._unexpected(token)
        return token

    def _at_keyword(self, word: str) -> bool:
        token = self._peek()
        return token is not None and token.kind == "name" and token.text.upper() == word

    # ---- grammar

    def query(self) -> Query:
        self._keyword("SELECT")
        count = False
        names: list[_Token] = []
        first = self._next()
        if first.kind == "name" and first.text.upper() == "COUNT" and self._peek_punct("("):
            self._punct("(")
            self._punct(")")
            count = True
        else:
            self.position -= 1
            while True:
                token = self._next()
                if token.kind != "name" or token.text.upper() in ("FROM", "SELECT"):
                    raise self._unexpected(token)
                names.append(token)
                if len(names) > MAX_FIELDS:
                    raise self._error(token.at, "MALFORMED_QUERY", f"at most {MAX_FIELDS} fields")
                if not self._peek_punct(","):
                    break
                self._punct(",")
        self._keyword("FROM")
        object_token = self._next()
        if object_token.kind != "name":
            raise self._unexpected(object_token)
        spec = sobject(object_token.text)
        if spec is None:
            raise self._error(
                object_token.at, "INVALID_TYPE",
                f"sObject type '{object_token.text}' is not supported. If you are attempting to use a "
                "custom object, be sure to append the '__c' after the entity name. Please reference "
                "your WSDL or the describe call for the appropriate names.",
            )
        fields = tuple(self._field(spec, token) for token in names)
        conditions: list[Condition] = []
        if self._at_keyword("WHERE"):
            self._next()
            while True:
                conditions.append(self._condition(spec))
                if len(conditions) > MAX_CONDITIONS:
                    raise self._error(self.tokens[self.position - 1].at, "MALFORMED_QUERY",
                                      f"at most {MAX_CONDITIONS} conditions")
                if not self._at_keyword("AND"):
                    break
                self._next()
        limit = None
        if self._at_keyword("LIMIT"):
            self._next()
            token = self._next()
            if token.kind != "number" or token.text.startswith("-"):
                raise self._unexpected(token)
            limit = int(token.text)
        trailing = self._peek()
        if trailing is not None:
            raise self._unexpected(trailing)
        return Query(spec, fields, count, tuple(conditions), limit)

    def _peek_punct(self, char: str) -> bool:
        token = self._peek()
        return token is not None and token.kind == "punct" and token.text == char

    def _punct(self, char: str) -> None:
        token = self._next()
        if token.kind != "punct" or token.text != char:
            raise self._unexpected(token)

    def _field(self, spec: SObject, token: _Token) -> Field:
        found = spec.field(token.text)
        if found is None:
            raise self._error(
                token.at, "INVALID_FIELD",
                f"No such column '{token.text}' on entity '{spec.name}'. If you are attempting to use "
                "a custom field, be sure to append the '__c' after the custom field name. Please "
                "reference your WSDL or the describe call for the appropriate names.",
            )
        return found

    def _condition(self, spec: SObject) -> Condition:
        name = self._next()
        if name.kind != "name":
            raise self._unexpected(name)
        field = self._field(spec, name)
        op = self._next()
        if op.kind != "op" or op.text not in ("=", "!=", "<>"):
            raise self._unexpected(op)
        literal = self._next()
        value: Any
        if literal.kind == "string":
            value = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), literal.text[1:-1])
        elif literal.kind == "number":
            value = int(literal.text)
        elif literal.kind == "name" and literal.text.lower() in ("true", "false", "null"):
            value = {"true": True, "false": False, "null": None}[literal.text.lower()]
        else:
            raise self._unexpected(literal)
        return Condition(field, op.text != "=", value)
