"""Attacks on the scoring service: decompression bombs, unauthenticated floods, a soak.

Each subcommand starts ``alscout serve`` in a subprocess on a free loopback port (the
tests' tiny model unless ``--model``, a DurableOutbox in a temporary folder, its log kept
there), prints the box's uptime and load first (a quiet box is needed for latencies to
mean anything), polls the server's RSS (``/proc/<pid>/status`` VmRSS) and prints a table.

- ``bombs``: a clean stream paced at ``--clean-fps`` alone for ``--baseline`` seconds,
  then beside ``--bomb-streams`` streams that send in-limit PNG bombs (16384 x 2441,
  one colour: 40 M pixels, ~100 KB) as fast as the server takes them for ``--seconds``:
  the clean stream's p50/p99 latency in both phases, the bomb calls' status codes and
  messages, the server's peak RSS.
- ``unauth``: against a server that wants a bearer token, ``--calls`` concurrent Score
  calls of ``--mb`` MB each (a valid raw frame), each on its own connection, without the
  token: their status codes, the RSS idle before and after and its peak in between.
- ``soak``: ``--streams`` streams paced at ``--fps`` each for ``--minutes``, each
  starting a new recording every ``--recording-frames`` frames; RSS and the achieved
  rate every ``--sample`` seconds, and the RSS growth after the first minute.

    .venv/bin/python bench/attacks.py bombs [--seconds 60] [--bomb-streams 4] [--clean-fps 10]
    .venv/bin/python bench/attacks.py unauth [--calls 24] [--mb 60]
    .venv/bin/python bench/attacks.py soak [--minutes 30] [--streams 16] [--fps 10]

Add ``--json OUT`` to any of them to keep the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import secrets
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc

from alscout.server._proto import alscout_pb2 as pb
from alscout.server._proto import alscout_pb2_grpc

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # attack_tools next to this file, also when imported
    sys.path.insert(0, str(HERE))
from attack_tools import (  # noqa: E402
    BombStream,
    PacedStream,
    RssSampler,
    Server,
    box_state,
    idle_rss_mb,
    percentiles,
    png_bomb,
    rss_kb,
    table,
)

_spec = importlib.util.spec_from_file_location("bench_load", HERE / "load.py")
assert _spec is not None and _spec.loader is not None
load = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(load)  # build_model, make_frames

#: the bombs' size: 39,993,344 pixels, under the default max_pixels (40 M) and 16384 a side
BOMB_SIZE = (16384, 2441)
#: channel options of the attacking clients: no client-side cap on what they send
CLIENT_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
#: a soak sample's row
ROW = "{:>6} {:>8} {:>8} {:>7} {:>8} {:>8} {:>6}"


# -- bombs -----------------------------------------------------------------------------


async def _bombs(server: Server, args: argparse.Namespace, rss: RssSampler) -> dict[str, Any]:
    frames = load.make_frames(32, 640, 480)
    bomb = png_bomb(*BOMB_SIZE)
    phases: dict[str, Any] = {"bomb_bytes": len(bomb)}
    async with grpc.aio.insecure_channel(server.target, options=CLIENT_OPTIONS) as channel:
        stub = alscout_pb2_grpc.ScorerStub(channel)
        await PacedStream(stub, "warm", frames, args.clean_fps, 10**9).run(time.monotonic() + 2)
        for phase, seconds, n_bombs in (
            ("alone", args.baseline, 0),
            ("bombs", args.seconds, args.bomb_streams),
        ):
            rss.reset_peak()
            clean = PacedStream(stub, f"clean-{phase}", frames, args.clean_fps, 10**9)
            # each bomb stream on its own connection, as separate hostile clients would be
            bomb_channels = [
                grpc.aio.insecure_channel(server.target, options=CLIENT_OPTIONS)
                for _ in range(n_bombs)
            ]
            bombers = [
                BombStream(alscout_pb2_grpc.ScorerStub(c), f"bomb{k}", bomb, args.bomb_window)
                for k, c in enumerate(bomb_channels)
            ]
            stop_at = time.monotonic() + seconds
            await asyncio.gather(clean.run(stop_at), *(b.run(stop_at) for b in bombers))
            for c in bomb_channels:
                await c.close()
            p50, p99, worst = percentiles([ms for _, ms in clean.latencies])
            codes: Counter = Counter()
            messages: dict[str, str] = {}
            for b in bombers:
                codes.update(b.codes)
                for code, message in b.messages.items():
                    messages.setdefault(code, message)
            phases[phase] = {
                "seconds": seconds,
                "clean_frames": len(clean.latencies),
                "clean_fps": len(clean.latencies) / seconds,
                "clean_p50_ms": p50,
                "clean_p99_ms": p99,
                "clean_max_ms": worst,
                "clean_errors": clean.errors,
                "bombs_sent": sum(b.sent for b in bombers),
                "bombs_scored": sum(b.scored for b in bombers),
                "bomb_calls": sum(b.calls for b in bombers),
                "bomb_codes": dict(codes),
                "bomb_messages": messages,
                "peak_rss_mb": rss.peak / 1024,
            }
    return phases


def bombs(args: argparse.Namespace, folder: Path, model: Path) -> dict[str, Any]:
    server = Server(model, folder)
    rss = RssSampler(server.pid)
    try:
        idle = idle_rss_mb(server.pid)
        figures = asyncio.run(_bombs(server, args, rss))
        figures["idle_rss_mb"] = idle
        figures["end_rss_mb"] = rss_kb(server.pid) / 1024
        figures["server_alive"] = server.alive
    finally:
        rss.stop()
        exit_code = server.stop()
    figures["server_exit"] = exit_code
    figures["server_errors"] = server.errors()[:5]
    a, b = figures["alone"], figures["bombs"]
    columns = ("alone", f"with {args.bomb_streams} bomb streams")

    def pair(key: str, fmt: str = ".1f") -> str:
        return f"{a[key]:>14{fmt}} {b[key]:>26{fmt}}"

    rows = [
        ("bomb", f"PNG {BOMB_SIZE[0]}x{BOMB_SIZE[1]}, {figures['bomb_bytes'] / 1024:.0f} KB"),
        ("", f"{columns[0]:>14} {columns[1]:>26}"),
        ("seconds", pair("seconds", ".0f")),
        ("clean frames", pair("clean_frames", "d")),
        ("clean fps", pair("clean_fps")),
        ("clean p50 ms", pair("clean_p50_ms")),
        ("clean p99 ms", pair("clean_p99_ms")),
        ("clean max ms", pair("clean_max_ms")),
        ("clean errors", f"{len(a['clean_errors']):>14} {len(b['clean_errors']):>26}"),
        ("peak RSS MB", pair("peak_rss_mb")),
        (
            "bombs sent / scored",
            f"{b['bombs_sent']} / {b['bombs_scored']} in {b['bomb_calls']} calls",
        ),
        *(
            (f"  bomb calls {code}", f"{n}: {b['bomb_messages'][code][:150]}")
            for code, n in sorted(b["bomb_codes"].items())
        ),
        ("server RSS MB", f"idle {figures['idle_rss_mb']:.1f}, end {figures['end_rss_mb']:.1f}"),
        ("server alive / exit", f"{figures['server_alive']} / {figures['server_exit']}"),
    ]
    print(table(rows))
    for error in (a["clean_errors"] + b["clean_errors"])[:5]:
        print(f"  clean stream error: {error}")
    for line in figures["server_errors"]:
        print(f"  server ERROR: {line}")
    return figures


# -- unauth ----------------------------------------------------------------------------


async def _unauth(server: Server, token: str, args: argparse.Namespace) -> dict[str, Any]:
    auth = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = alscout_pb2_grpc.ScorerStub(channel)
        await stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=auth, timeout=30)
        try:
            await stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=30)
            refused = "OK (not refused!)"
        except grpc.aio.AioRpcError as error:
            refused = error.code().name
    width, height = 5000, max(1, round(args.mb * 1e6 / (3 * 5000)))
    frame = pb.Frame(recording_id="flood", camera_id="cam0", frame_index=0)
    frame.raw.width, frame.raw.height, frame.raw.pixel_format = width, height, pb.PIXEL_FORMAT_RGB8
    frame.raw.data = bytes(3 * width * height)
    payload = frame.SerializeToString()
    del frame

    async def one() -> tuple[str, str, float]:
        began = time.monotonic()
        async with grpc.aio.insecure_channel(server.target, options=CLIENT_OPTIONS) as ch:
            score = ch.unary_unary(
                "/alscout.v1.Scorer/Score",
                request_serializer=None,
                response_deserializer=pb.FrameResult.FromString,
            )
            try:
                await score(payload, timeout=args.timeout)
                code, details = "OK", ""
            except grpc.aio.AioRpcError as error:
                code, details = error.code().name, (error.details() or "")[:160]
        return code, details, time.monotonic() - began

    began = time.monotonic()
    answers = await asyncio.gather(*(one() for _ in range(args.calls)))
    wall = time.monotonic() - began
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = alscout_pb2_grpc.ScorerStub(channel)
        await stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=auth, timeout=30)
    return {
        "payload_mb": len(payload) / 1e6,
        "unauthenticated_model_info": refused,
        "codes": dict(Counter(code for code, _, _ in answers)),
        "messages": {code: details for code, details, _ in answers},
        "call_s_max": max(s for _, _, s in answers),
        "wall_s": wall,
    }


def unauth(args: argparse.Namespace, folder: Path, model: Path) -> dict[str, Any]:
    token_file = folder / "token"
    token = secrets.token_hex(32)
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    # the message limit must let the flood through gRPC: the token check is what is measured
    limit = max(64 << 20, int(args.mb * 1e6) + (1 << 20))
    env = {"ALSCOUT_SERVER_MAX_MESSAGE_BYTES": str(limit)}
    server = Server(model, folder, ["--token-file", str(token_file)], env)
    rss = RssSampler(server.pid)
    try:
        time.sleep(1.0)
        before = idle_rss_mb(server.pid)
        rss.reset_peak()
        figures = asyncio.run(_unauth(server, token, args))
        peak = rss.peak / 1024
        time.sleep(args.settle)
        after = idle_rss_mb(server.pid)
        figures.update(idle_before_mb=before, peak_mb=peak, idle_after_mb=after)
        figures["server_alive"] = server.alive
    finally:
        rss.stop()
        exit_code = server.stop()
    figures["server_exit"] = exit_code
    figures["max_message_bytes"] = limit
    rows = [
        ("flood", f"{args.calls} Score calls x {figures['payload_mb']:.1f} MB, no token"),
        ("GetModelInfo without token", figures["unauthenticated_model_info"]),
        *(
            (f"  {code}", f"{n}: {figures['messages'][code]}")
            for code, n in sorted(figures["codes"].items())
        ),
        ("wall s (slowest call)", f"{figures['wall_s']:.1f} ({figures['call_s_max']:.1f})"),
        ("RSS MB idle before", f"{before:.1f}"),
        ("RSS MB peak during", f"{peak:.1f} ({peak - before:+.1f})"),
        (f"RSS MB idle after {args.settle:g} s", f"{after:.1f} ({after - before:+.1f})"),
        ("server alive / exit", f"{figures['server_alive']} / {exit_code}"),
    ]
    print(table(rows))
    return figures


# -- soak ------------------------------------------------------------------------------


async def _soak(
    server: Server, args: argparse.Namespace, rows: list[dict[str, Any]]
) -> list[PacedStream]:
    width, height = (int(v) for v in args.frame_size.lower().split("x"))
    frames = load.make_frames(32, width, height)
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = alscout_pb2_grpc.ScorerStub(channel)
        streams = [
            PacedStream(stub, f"soak{k}", frames, args.fps, args.recording_frames)
            for k in range(args.streams)
        ]
        began = time.monotonic()
        stop_at = began + 60 * args.minutes
        tasks = [asyncio.create_task(s.run(stop_at)) for s in streams]
        last_t, last_n = began, 0
        print(ROW.format("min", "RSS MB", "frames", "fps", "p50 ms", "p99 ms", "errors"))
        while not all(t.done() for t in tasks):
            await asyncio.wait(
                tasks, timeout=max(0.0, min(args.sample, stop_at + 5 - time.monotonic())) or 0.01
            )
            now = time.monotonic()
            lat = [ms for s in streams for t, ms in s.latencies if t > last_t]
            n = sum(len(s.latencies) for s in streams)
            p50, p99, _ = percentiles(lat)
            row = {
                "t_min": (now - began) / 60,
                "rss_mb": rss_kb(server.pid) / 1024,
                "frames": n,
                "fps": (n - last_n) / max(now - last_t, 1e-9),
                "p50_ms": p50,
                "p99_ms": p99,
                "errors": sum(len(s.errors) for s in streams),
            }
            rows.append(row)
            cells = [f"{row['t_min']:.2f}", f"{row['rss_mb']:.1f}", n, f"{row['fps']:.1f}"]
            cells += [f"{p50:.1f}", f"{p99:.1f}", row["errors"]]
            print(ROW.format(*cells), flush=True)
            last_t, last_n = now, n
        return streams


def soak(args: argparse.Namespace, folder: Path, model: Path) -> dict[str, Any]:
    server = Server(model, folder)
    rows: list[dict[str, Any]] = []
    try:
        start_mb = idle_rss_mb(server.pid)
        streams = asyncio.run(_soak(server, args, rows))
        alive = server.alive
    finally:
        exit_code = server.stop()
    seconds = 60 * args.minutes
    rates = [len(s.latencies) / seconds for s in streams]
    base = next((r for r in rows if r["t_min"] * 60 >= args.baseline), None)
    growth = None
    if base is not None and rows[-1] is not base:
        growth = 100 * (rows[-1]["rss_mb"] - base["rss_mb"]) / base["rss_mb"]
    p50, p99, worst = percentiles([ms for s in streams for _, ms in s.latencies])
    errors = [e for s in streams for e in s.errors]
    figures = {
        "streams": args.streams,
        "offered_fps": args.streams * args.fps,
        "achieved_fps": sum(rates),
        "per_stream_fps_min_max": [min(rates), max(rates)],
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": worst,
        "errors": len(errors),
        "error_examples": errors[:5],
        "rss_start_mb": start_mb,
        "rss_baseline_mb": base["rss_mb"] if base else None,
        "rss_end_mb": rows[-1]["rss_mb"] if rows else None,
        "rss_max_mb": max((r["rss_mb"] for r in rows), default=None),
        "growth_after_baseline_pct": growth,
        "server_alive": alive,
        "server_exit": exit_code,
        "samples": rows,
    }
    growth_text = "n/a (run longer than the baseline plus one sample)"
    if growth is not None:
        growth_text = f"{growth:+.1f} % ({base['rss_mb']:.1f} -> {rows[-1]['rss_mb']:.1f} MB)"
    table_rows = [
        ("streams x fps", f"{args.streams} x {args.fps:g} = {args.streams * args.fps:g} offered"),
        ("frames", f"{args.frame_size} JPEG, a new recording every {args.recording_frames}"),
        ("achieved fps", f"{sum(rates):.1f} (per stream {min(rates):.2f}-{max(rates):.2f})"),
        ("latency ms", f"p50 {p50:.1f}, p99 {p99:.1f}, max {worst:.1f}"),
        ("errors", str(len(errors))),
        ("RSS MB", f"start {start_mb:.1f}, max {figures['rss_max_mb'] or 0:.1f}"),
        (f"RSS growth after {args.baseline:g} s", growth_text),
        ("server alive / exit", f"{alive} / {exit_code}"),
    ]
    print(table(table_rows))
    for error in errors[:5]:
        print(f"  error: {error}")
    return figures


# -- command line ----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="ONNX file, 'tiny' or 'detector'")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--workdir", type=Path, help="keep the server log and outbox here")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("bombs", help="PNG bombs beside a clean stream")
    p.add_argument("--seconds", type=float, default=60.0, help="the bombs phase")
    p.add_argument("--baseline", type=float, default=10.0, help="the clean stream alone first")
    p.add_argument("--bomb-streams", type=int, default=4)
    p.add_argument("--bomb-window", type=int, default=2, help="bombs in flight per stream")
    p.add_argument("--clean-fps", type=float, default=10.0)
    p = commands.add_parser("unauth", help="large Score calls without the token")
    p.add_argument("--calls", type=int, default=24)
    p.add_argument("--mb", type=float, default=60.0, help="size of each request")
    p.add_argument("--timeout", type=float, default=120.0, help="per call, seconds")
    p.add_argument("--settle", type=float, default=5.0, help="seconds before the idle RSS after")
    p = commands.add_parser("soak", help="many paced streams for a long time")
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--streams", type=int, default=16)
    p.add_argument("--fps", type=float, default=10.0, help="per stream")
    p.add_argument("--frame-size", default="320x240", help="WIDTHxHEIGHT of the JPEG frames")
    p.add_argument("--recording-frames", type=int, default=600, help="frames per recording")
    p.add_argument("--sample", type=float, default=10.0, help="seconds between RSS samples")
    p.add_argument("--baseline", type=float, default=60.0, help="growth is measured from here (s)")
    args = parser.parse_args(argv)
    print(box_state())
    run = {"bombs": bombs, "unauth": unauth, "soak": soak}[args.command]
    with tempfile.TemporaryDirectory(prefix="alscout-attacks-") as tmp:
        folder = args.workdir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        model = load.build_model(args.model, folder)
        figures = run(args, folder, model)
    if args.json:
        args.json.write_text(
            json.dumps({"command": args.command, **figures}, indent=2, default=str)
        )
    return 0 if figures.get("server_alive") else 1


if __name__ == "__main__":
    raise SystemExit(main())
