"""A stand-in for the Claude Code CLI that speaks its stream-json protocol, scripted per test.

Run as ``python fake_claude.py --scenario FILE [the CLI's own flags, ignored]``. It answers the
SDK's ``initialize`` control request, reads the user's prompt from stdin, then plays the next
step of the scenario for the agent type named in the prompt (``Agent type: developer``), and
exits when the SDK closes its input.

The scenario file (JSON)::

    {"log": "/tmp/x/log.jsonl",          # every run appends {"agent", "prompt", "cwd", "argv",
                                         #   "env": its environment, "niceness": its own}
     "agents": {"developer": [STEP, STEP, ...], "*": [STEP]}}

The n-th run of an agent type plays its n-th step (the last one again when they run out;
``"*"`` serves types without their own list). A STEP::

    {"text": "answer",                   # the final answer (result.result)
     "messages": ["thinking aloud", {"tool": "Write", "input": {...}}, {"tool_result": "ok"}],
     "write": {"path/in/cwd": "content"},# files the "agent" writes in its working directory
     "usage": {"input_tokens": 10, "output_tokens": 5}, "cost": 0.01, "model": "claude-x",
     "lines": 0,                         # that many extra assistant messages, as fast as it can
     "sleep": 0,                         # seconds before the result (a slow run)
     "error": null,                      # "rate_limit" | "auth" | "agent": an error result
     "resets_at": null,                  # with "rate_limit": a rate_limit_event resetting then
     "crash": false,                     # exit 3 mid-stream, without a result
     "malformed": false,                 # print a broken JSON line, then exit 1
     "no_result": false}                 # exit 0 without a result
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import uuid
from pathlib import Path


def emit(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def read_message() -> dict | None:
    line = sys.stdin.readline()
    if not line:
        return None
    return json.loads(line)


def next_step(scenario: dict, agent: str, state_dir: Path) -> dict:
    steps = scenario["agents"].get(agent) or scenario["agents"].get("*") or [{}]
    if len(steps) == 1:
        return steps[0]  # no counting: many runs at once (the benchmark) share the file
    counter = state_dir / f"count-{agent}"
    # One run at a time per agent type in these tests; a file counter is enough.
    runs = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(runs + 1))
    return steps[min(runs, len(steps) - 1)]


def assistant(content: list, model: str, session: str) -> dict:
    return {"type": "assistant", "session_id": session, "parent_tool_use_id": None,
            "message": {"role": "assistant", "model": model, "content": content}}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenario", required=True)
    args, _ = parser.parse_known_args()
    scenario = json.loads(Path(args.scenario).read_text())
    session = str(uuid.uuid4())

    prompt = None
    while prompt is None:
        message = read_message()
        if message is None:
            return 2
        if message.get("type") == "control_request":
            emit({"type": "control_response", "response": {
                "subtype": "success", "request_id": message["request_id"], "response": {}}})
        elif message.get("type") == "user":
            content = message["message"]["content"]
            prompt = content if isinstance(content, str) else json.dumps(content)

    match = re.search(r"Agent type: (\w+)", prompt)
    agent = match.group(1) if match else "unknown"
    step = next_step(scenario, agent, Path(args.scenario).parent)
    if scenario.get("log"):
        with open(scenario["log"], "a") as log:
            log.write(json.dumps({"agent": agent, "prompt": prompt, "cwd": os.getcwd(),
                                  "argv": sys.argv[1:], "env": dict(os.environ),
                                  "niceness": os.getpriority(os.PRIO_PROCESS, 0)}) + "\n")

    model = step.get("model", "claude-fake-1")
    emit({"type": "system", "subtype": "init", "session_id": session, "model": model,
          "cwd": os.getcwd(), "tools": [], "claude_code_version": "2.1.200"})
    for path, content in step.get("write", {}).items():
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    for item in step.get("messages", []):
        if isinstance(item, str):
            emit(assistant([{"type": "text", "text": item}], model, session))
        elif "tool" in item:
            emit(assistant([{"type": "tool_use", "id": "tu1", "name": item["tool"],
                             "input": item.get("input", {})}], model, session))
        else:
            emit({"type": "user", "session_id": session, "parent_tool_use_id": None,
                  "message": {"role": "user", "content": [
                      {"type": "tool_result", "tool_use_id": "tu1",
                       "content": item["tool_result"]}]}})
    for i in range(step.get("lines", 0)):
        emit(assistant([{"type": "text", "text": f"line {i}"}], model, session))
    if step.get("crash"):
        return 3
    if step.get("malformed"):
        sys.stdout.write('{"type": "assistant", "message": {"content": [\n')
        sys.stdout.flush()
        return 1
    time.sleep(step.get("sleep", 0))
    if step.get("no_result"):
        return 0

    error = step.get("error")
    text = step.get("text", "done")
    result = {"type": "result", "subtype": "success", "is_error": False, "duration_ms": 5,
              "duration_api_ms": 4, "num_turns": 1, "session_id": session, "result": text,
              "total_cost_usd": step.get("cost", 0.001),
              "usage": step.get("usage", {"input_tokens": 100, "output_tokens": 20})}
    if error == "rate_limit":
        if step.get("resets_at"):
            emit({"type": "rate_limit_event", "uuid": str(uuid.uuid4()), "session_id": session,
                  "rate_limit_info": {"status": "rejected", "resetsAt": step["resets_at"],
                                      "rateLimitType": "five_hour"}})
        result.update(is_error=True, api_error_status=429,
                      result="API Error: 429 rate_limit_error: too many requests")
    elif error == "auth":
        result.update(is_error=True, api_error_status=401,
                      result="Invalid API key · Please run /login")
    elif error == "agent":
        result.update(is_error=True, subtype="error_max_turns", result="reached max turns")
    emit(result)
    # The SDK closes our input once it has the result.
    while read_message() is not None:
        pass
    return 1 if result["is_error"] else 0


if __name__ == "__main__":
    sys.exit(main())
