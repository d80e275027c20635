#!/usr/bin/env python3
"""Multi-turn sessions from real OpenTelemetry Python clients, for span-sessions.

Traces are made with the OpenTelemetry SDK and OpenInference's tracer
provider, whose `using_session` / `using_metadata` / `using_user` context
managers put `session.id`, `metadata` and `user.id` on every span of a turn,
as OpenInference instrumentors do.

    otel_sessions.py --endpoint http://127.0.0.1:4318/v1/traces --out DIR

1. Sends sessions over OTLP/HTTP (protobuf, gzip) to --endpoint with the
   SDK's `OTLPSpanExporter` behind a `BatchSpanProcessor`.
2. Records other sessions with an in-memory exporter and writes them as
   OTLP request files: DIR/sessions.pb (protobuf), DIR/sessions.json (one
   OTLP/JSON request) and DIR/sessions.jsonl (the same spans as two requests,
   one per line).

Prints a JSON manifest on stdout: for each way ("http", "files"), the
expected sessions as {project: {session_id: {"user_id", "turns": [...]}}}
with each turn's input, output, token total and status, oldest first.
"""

import argparse
import base64
import json
import os
import sys

from google.protobuf.json_format import MessageToDict
from openinference.instrumentation import (
    TracerProvider,
    using_metadata,
    using_session,
    using_user,
)
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode


def provider_for(project, processor):
    resource = Resource.create(
        {"openinference.project.name": project, "service.name": "otel-sessions-test"}
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(processor)
    return provider


def turn(tracer, question, answer, prompt_tokens, completion_tokens, tool_fails=False):
    """One turn: an AGENT root with the input and output, an LLM child with
    token counts and a TOOL child (ERROR when `tool_fails`)."""
    with tracer.start_as_current_span("agent") as root:
        root.set_attribute("openinference.span.kind", "AGENT")
        root.set_attribute("input.value", question)
        root.set_attribute("input.mime_type", "text/plain")
        # Attribute values of every OpenTelemetry Python type.
        root.set_attribute("test.bool", True)
        root.set_attribute("test.int", 42)
        root.set_attribute("test.double", 0.25)
        root.set_attribute("test.strings", ["a", "b"])
        root.set_attribute("test.ints", [1, 2, 3])
        with tracer.start_as_current_span("llm") as llm:
            llm.set_attribute("openinference.span.kind", "LLM")
            llm.set_attribute("llm.model_name", "gpt-test")
            llm.set_attribute("llm.token_count.prompt", prompt_tokens)
            llm.set_attribute("llm.token_count.completion", completion_tokens)
            llm.set_attribute("llm.token_count.total", prompt_tokens + completion_tokens)
        with tracer.start_as_current_span("tool") as tool:
            tool.set_attribute("openinference.span.kind", "TOOL")
            if tool_fails:
                tool.set_status(Status(StatusCode.ERROR, "tool timed out"))
        root.set_attribute("output.value", answer)
    return {
        "input": question,
        "output": answer,
        "tokens_total": prompt_tokens + completion_tokens,
        "status": "error" if tool_fails else "unset",
    }


def conversation(tracer, prefix, session_id, user_id, n, fail_at=None):
    turns = []
    with using_session(session_id), using_user(user_id), using_metadata(
        {"tier": "gold", "run": prefix}
    ):
        for i in range(n):
            turns.append(
                turn(
                    tracer,
                    f"{prefix} question {i + 1} of {session_id}",
                    f"{prefix} answer {i + 1} for {user_id}",
                    100 + i,
                    20 + i,
                    tool_fails=(i == fail_at),
                )
            )
    return {"user_id": user_id, "turns": turns}


def metadata_conversation(tracer, prefix, conversation_id, n):
    """A session named only by the LangChain-style `metadata` JSON."""
    turns = []
    with using_metadata({"conversation_id": conversation_id}):
        for i in range(n):
            turns.append(
                turn(tracer, f"{prefix} meta q{i + 1}", f"{prefix} meta a{i + 1}", 10, 5)
            )
    return {"user_id": None, "turns": turns}


def send_over_http(endpoint):
    expected = {"py-chat": {}, "py-other": {}}
    exporter = OTLPSpanExporter(endpoint=endpoint, compression=Compression.Gzip, timeout=10)
    chat = provider_for("py-chat", BatchSpanProcessor(exporter))
    other_exporter = OTLPSpanExporter(endpoint=endpoint, timeout=10)
    other = provider_for("py-other", SimpleSpanProcessor(other_exporter))
    tracer = chat.get_tracer("otel-sessions-test")
    chat_sessions = expected["py-chat"]
    chat_sessions["py-session-1"] = conversation(tracer, "http", "py-session-1", "user-1", 3)
    chat_sessions["py-session-2"] = conversation(
        tracer, "http", "py-session-2", "user-2", 2, fail_at=1
    )
    chat_sessions["py-meta-conv"] = metadata_conversation(tracer, "http", "py-meta-conv", 2)
    # The same session id in another project is another session.
    expected["py-other"]["py-session-1"] = conversation(
        other.get_tracer("otel-sessions-test"), "other", "py-session-1", "user-9", 1
    )
    for p in (chat, other):
        if not p.force_flush(timeout_millis=10_000):
            sys.exit("force_flush timed out: the receiver did not accept the spans")
        p.shutdown()
    return expected


def hex_ids(request):
    """Protobuf's JSON mapping writes bytes as base64; OTLP/JSON wants hex ids."""

    def fix(obj, keys):
        for k in keys:
            if k in obj:
                obj[k] = base64.b64decode(obj[k]).hex()

    for rs in request.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                fix(span, ("traceId", "spanId", "parentSpanId"))
                for link in span.get("links", []):
                    fix(link, ("traceId", "spanId"))
    return request


def otlp_json(request_pb):
    return hex_ids(MessageToDict(request_pb, use_integers_for_enums=True))


def write_files(out_dir):
    memory = InMemorySpanExporter()
    provider = provider_for("py-files", SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("otel-sessions-test")
    expected = {
        "py-files": {
            "py-file-session": conversation(tracer, "file", "py-file-session", "user-f", 3),
            "py-file-meta": metadata_conversation(tracer, "file", "py-file-meta", 1),
        }
    }
    provider.shutdown()
    spans = list(memory.get_finished_spans())
    whole = encode_spans(spans)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "sessions.pb"), "wb") as f:
        f.write(whole.SerializeToString())
    with open(os.path.join(out_dir, "sessions.json"), "w") as f:
        json.dump(otlp_json(whole), f, indent=2)
    half = len(spans) // 2
    with open(os.path.join(out_dir, "sessions.jsonl"), "w") as f:
        for part in (spans[:half], spans[half:]):
            f.write(json.dumps(otlp_json(encode_spans(part))) + "\n")
    expected["span_count"] = len(spans)
    return expected


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    manifest = {"http": send_over_http(args.endpoint), "files": write_files(args.out)}
    json.dump(manifest, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
