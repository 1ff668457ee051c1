"""The HTTP routes of `lmtune serve`, one router per concern; `serve/app.py` wires them into the app."""
