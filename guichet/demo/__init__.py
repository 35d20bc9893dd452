"""The demo: data a newcomer can log in with (`seed`) and a demo PBX standing in for Asterisk
(`pbx`), so Guichet visibly works without a telephone system. `guichet demo` (`cli`)."""

from guichet.demo.pbx import DemoPbx, DemoRefused, start_demo_pbx

__all__ = ["DemoPbx", "DemoRefused", "start_demo_pbx"]
