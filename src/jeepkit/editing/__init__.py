"""Editors. One target-optimisation engine (engine.py); each method module states only what differs."""
