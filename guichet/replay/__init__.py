"""Asterisk's side of the wire, replayed from recordings: a FastAGI caller (`agi_caller`) and
an AMI server (`ami_server`). The test suite and the demo PBX share them, so the demo shows
exactly what the tests check."""
