"""Probe scripts: what the mystery caller dials and does once answered (YAML, pydantic-checked).

```yaml
name: commune-nl                 # optional: the file's stem
target: "021234567"              # a number (user part at the SIP server) or sip:ivr@pbx.example.be
caller: "+3225550199"            # the probe's own number: it registers as this user, and
                                 # Guichet's records are matched by it
sip: {server: pbx.example.be, port: 5060, password: secret}   # optional (settings / CLI)
answer_timeout: 30               # seconds from INVITE to 200 OK
timeout: 300                     # the whole call
correlate: 20                    # how long to wait for Guichet's records after the call
steps:
  - expect: [audio/sounds/fr/welcome.wav, audio/sounds/nl/welcome.wav]
    min_score: 0.6               # the greeting heard, compared with the prompt files
  - dtmf: "2"
  - wait: 1.5                    # seconds
  - wait: silence                # until the line goes quiet (silence: 1.0, max: 30)
  - hangup                       # optional: the call is hung up at the end anyway
```

Errors read ``FILE:LINE: message`` like the flows'.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from guichet.settings import ROOT
from ivr.yamlsrc import SourceMap, YamlError, load_yaml

DTMF_DIGITS = "0123456789*#ABCD"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SipSettings(_Strict):
    """The registrar/proxy the probe goes through; unset fields come from settings or CLI."""

    server: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    password: str | None = None
    domain: str | None = None


class WaitStep(_Strict):
    """``wait: 2.5`` seconds, or ``wait: silence`` until ``silence`` s without sound."""

    wait: float | Literal["silence"]
    silence: float = Field(default=1.0, gt=0)
    max: float = Field(default=30.0, gt=0)

    @field_validator("wait", mode="before")
    @classmethod
    def _seconds_or_silence(cls, value: Any) -> Any:
        if value == "silence":
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("wait is a number of seconds or 'silence'")
        if value < 0:
            raise ValueError("a wait cannot be negative")
        return float(value)


class DtmfStep(_Strict):
    """Send digits as RFC 4733 events, ``gap`` seconds apart."""

    dtmf: str = Field(min_length=1, max_length=32)
    gap: float = Field(default=0.25, ge=0)

    @field_validator("dtmf", mode="before")
    @classmethod
    def _digits(cls, value: Any) -> Any:
        text = str(value) if isinstance(value, int) else value
        if isinstance(text, str):
            bad = sorted({c for c in text.upper() if c not in DTMF_DIGITS})
            if bad:
                raise ValueError(f"not DTMF digits: {''.join(bad)} (use 0-9, *, #, A-D)")
            return text.upper()
        return value


class ExpectStep(_Strict):
    """Listen to the next prompt (sound, then ``silence`` s quiet, at most ``timeout`` s)
    and compare it with the audio file ``expect`` — or with several played back to back (a
    bilingual greeting: ``expect: [audio/sounds/fr/welcome.wav, audio/sounds/nl/welcome.wav]``).
    """

    expect: list[Path] = Field(min_length=1)
    min_score: float = Field(default=0.6, gt=0, le=1)
    min_ratio: float = Field(default=0.8, gt=0)
    max_ratio: float = Field(default=1.25, gt=0)
    silence: float = Field(default=1.0, gt=0)
    timeout: float = Field(default=30.0, gt=0)

    @field_validator("expect", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        return [value] if isinstance(value, str | Path) else value

    @model_validator(mode="after")
    def _ratios(self) -> ExpectStep:
        if self.min_ratio > self.max_ratio:
            raise ValueError("min_ratio is above max_ratio")
        return self


class HangupStep(_Strict):
    hangup: Literal[True] = True


def _step_kind(value: Any) -> str | None:
    if value == "hangup":
        return "hangup"
    if isinstance(value, dict):
        kinds = [k for k in ("wait", "dtmf", "expect", "hangup") if k in value]
        return kinds[0] if len(kinds) == 1 else None
    return None


Step = Annotated[
    Annotated[WaitStep, Tag("wait")]
    | Annotated[DtmfStep, Tag("dtmf")]
    | Annotated[ExpectStep, Tag("expect")]
    | Annotated[HangupStep, Tag("hangup")],
    Discriminator(
        _step_kind,
        custom_error_type="step_kind",
        custom_error_message="a step is one of wait, dtmf, expect or hangup",
    ),
]


class ProbeScript(_Strict):
    name: str = Field(default="", max_length=128)
    target: str = Field(min_length=1, max_length=255)
    caller: str = Field(min_length=1, max_length=64)
    sip: SipSettings = SipSettings()
    answer_timeout: float = Field(default=30.0, gt=0)
    timeout: float = Field(default=300.0, gt=0)
    correlate: float = Field(default=20.0, ge=0)
    steps: list[Step] = Field(default_factory=list)

    @field_validator("target", "caller", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @field_validator("steps", mode="before")
    @classmethod
    def _bare_hangup(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"hangup": True} if v == "hangup" else v for v in value]
        return value

    @property
    def digits(self) -> str:
        return "".join(s.dtmf for s in self.steps if isinstance(s, DtmfStep))

    @property
    def prompts(self) -> list[Path]:
        return [p for s in self.steps if isinstance(s, ExpectStep) for p in s.expect]


@dataclass(frozen=True)
class ScriptIssue:
    path: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class ScriptError(Exception):
    """The file cannot become a probe script; ``issues`` say where and why."""

    def __init__(self, issues: list[ScriptIssue]) -> None:
        super().__init__("\n".join(str(i) for i in issues))
        self.issues = issues


def _resolve(prompt: Path, script_dir: Path) -> Path | None:
    """A prompt path as written: absolute, next to the script, under the repository, or cwd."""
    if prompt.is_absolute():
        return prompt if prompt.is_file() else None
    for base in (script_dir, ROOT, Path.cwd()):
        candidate = base / prompt
        if candidate.is_file():
            return candidate.resolve()
    return None


def load_script(path: Path, text: str | None = None) -> ProbeScript:
    """Parse and check ``path``; prompt files are resolved (and must exist)."""
    try:
        data, smap = load_yaml(path, text)
    except YamlError as exc:
        raise ScriptError([ScriptIssue(path, exc.line, exc.message)]) from exc
    except OSError as exc:
        raise ScriptError([ScriptIssue(path, 1, f"unreadable: {exc.strerror}")]) from exc
    if not isinstance(data, dict):
        raise ScriptError([ScriptIssue(path, 1, "a probe script is a mapping (target, steps...)")])
    try:
        script = ProbeScript.model_validate(data)
    except ValidationError as exc:
        raise ScriptError(_issues(exc, smap)) from exc
    issues: list[ScriptIssue] = []
    steps = list(script.steps)
    for i, step in enumerate(steps):
        if isinstance(step, ExpectStep):
            resolved: list[Path] = []
            for j, prompt in enumerate(step.expect):
                found = _resolve(prompt, path.parent)
                if found is None:
                    where = ("steps", i, "expect", j) if len(step.expect) > 1 else ("steps", i)
                    line = smap.line_of(where if where in smap.lines else ("steps", i, "expect"))
                    issues.append(ScriptIssue(path, line, f"prompt audio not found: {prompt}"))
                else:
                    resolved.append(found)
            steps[i] = step.model_copy(update={"expect": resolved})
    if issues:
        raise ScriptError(issues)
    return script.model_copy(update={"steps": steps, "name": script.name or path.stem})


def _issues(exc: ValidationError, smap: SourceMap) -> list[ScriptIssue]:
    issues: list[ScriptIssue] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        # ('steps', 0, 'wait', 'wait') -> drop the union tag pydantic inserts after the index
        clean = tuple(
            p
            for i, p in enumerate(loc)
            if not (i == 2 and loc[0] == "steps" and p in ("wait", "dtmf", "expect", "hangup"))
        )
        where = ".".join(str(p) for p in clean) or "script"
        message = err["msg"].removeprefix("Value error, ")
        issues.append(ScriptIssue(smap.path, smap.line_of(clean), f"{where}: {message}"))
    return issues


__all__ = [
    "DtmfStep",
    "ExpectStep",
    "HangupStep",
    "ProbeScript",
    "ScriptError",
    "ScriptIssue",
    "SipSettings",
    "Step",
    "WaitStep",
    "load_script",
]
