"""The long-running service: signals, reload and shutdown (`service`), when each credential
rotates next and what a failure does to it (`scheduling`), the health/metrics HTTP server
(`health`, `metrics`), systemd readiness and watchdog (`sdnotify`) and the state file
(`statefile`).

May import rotator.engine and everything below it; never rotator.cli or rotator.testing.
Fault hooks for the crash tests come in from outside through `service.set_step_hook`.
"""
