"""An agent run shown again from its own stream alone: the offline transcript.

A run's stream (stream id = the run id) holds everything the run did — the prompt it was given
(``RunPrompted``), its process (``RunStarted``), every message and output line (``RunOutput``,
with each line's ``kind``: text, tool_use, tool_result ...) and how it ended (``RunFinished``).
:func:`transcript` renders those events as text, in order, with no call to the model: what
``ipa audit transcript RUN_ID`` prints.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ipa.eventstore import RecordedEvent


def transcript(events: Iterable[RecordedEvent], *, prompt: bool = True) -> Iterator[str]:
    """The lines of the run's transcript (``prompt=False`` leaves the prompt's text out)."""
    for event in events:
        data = event.data
        when = event.timestamp.strftime("%H:%M:%S.%f")[:-3]
        if event.type == "RunPrompted":
            model = data.get("model") or "the CLI's default model"
            yield f"[{when}] prompt to {data['agent']} ({model}), {len(data['prompt'])} chars"
            if data.get("memories"):
                yield f"[{when}] memories in the prompt: {', '.join(data['memories'])}"
            if prompt:
                yield from (f"  > {line}" for line in data["prompt"].splitlines())
        elif event.type == "RunStarted":
            yield (f"[{when}] started {data['agent']} via {data['runner']} "
                   f"(job {data['job_id']}, attempt {data['attempt']}, pid {data['pid']}) "
                   f"in {data['workspace']}")
        elif event.type == "RunOutput":
            for line in data["lines"]:
                label = line.get("kind") or line["stream"]
                if line["stream"] == "verify":
                    label = f"verify/{label}"
                text = line["text"].splitlines() or [""]
                yield f"[{when}] {label:>12} | {text[0]}"
                yield from (f"{'':>{len(when) + 16}}| {rest}" for rest in text[1:])
        elif event.type == "RunFinished":
            outcome = "succeeded" if data["succeeded"] else f"failed: {data['reason']}"
            yield f"[{when}] finished after {data['duration_seconds']:.1f} s: {outcome}"
        else:
            yield f"[{when}] {event.type} {data}"
