#!/usr/bin/env node
// A client of alscout.v1.Scorer built on another gRPC implementation (@grpc/grpc-js with
// @grpc/proto-loader): streams the JPEG/PNG images of a folder, in natural name order,
// as one stream and prints every final decision as one JSON line on stdout, in the
// format of `alscout stream --out` (docs/operations.md).
//
//   node stream_folder.js --target 127.0.0.1:50051 --folder frames/ \
//       --recording-id rec1 --camera-id front [--ca ca.pem [--cert c.crt --key c.key]]
//       [--token-file token] [--cut-after N]
//
// The stream is resumable (docs/api.md, "Resuming"): frames carry `resumable`, the
// stream ends with an end_of_stream message, and the client keeps the stream's
// resume_token from its results. `--cut-after N` cancels the call once N frames are
// answered and resumes the stream in a new call (resume_token, last decided frame),
// then sends the frames after the server's last_received_frame; the decisions printed
// are the same as an uncut run's, each once.
//
// Exit status: 0 when the call ends cleanly, 1 on a gRPC error (message on stderr),
// 2 on bad arguments.
"use strict";

const fs = require("fs");
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTO_ROOT = path.resolve(__dirname, "..", "..", "protos");
const ENCODINGS = { ".jpg": "ENCODING_JPEG", ".jpeg": "ENCODING_JPEG", ".png": "ENCODING_PNG" };
const DECISIONS = { DECISION_FLAGGED: "flagged", DECISION_NOT_FLAGGED: "not_flagged" };

function parseArgs(argv) {
  const args = { recordingId: "rec1", cameraId: "cam0" };
  const names = {
    "--target": "target",
    "--folder": "folder",
    "--recording-id": "recordingId",
    "--camera-id": "cameraId",
    "--ca": "ca",
    "--cert": "cert",
    "--key": "key",
    "--token-file": "tokenFile",
    "--proto-root": "protoRoot",
    "--cut-after": "cutAfter",
  };
  for (let i = 0; i < argv.length; i += 2) {
    const name = names[argv[i]];
    if (name === undefined || i + 1 >= argv.length) {
      throw new Error(`unknown option or missing value: ${argv[i]}`);
    }
    args[name] = argv[i + 1];
  }
  if (!args.target || !args.folder) {
    throw new Error("--target and --folder are required");
  }
  if (Boolean(args.cert) !== Boolean(args.key)) {
    throw new Error("--cert and --key go together");
  }
  return args;
}

// The order of alscout.server.sources.natural_key: digit runs compare as numbers.
function naturalKey(name) {
  return name
    .split(/(\d+)/)
    .filter((part) => part.length > 0)
    .map((part) => (/^\d+$/.test(part) ? [0, Number(part), part] : [1, part.toLowerCase(), part]));
}

function compareKeys(a, b) {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    for (let j = 0; j < 3; j++) {
      if (a[i][j] < b[i][j]) return -1;
      if (a[i][j] > b[i][j]) return 1;
    }
  }
  return a.length - b.length;
}

function listImages(folder) {
  return fs
    .readdirSync(folder)
    .filter((name) => ENCODINGS[path.extname(name).toLowerCase()] !== undefined)
    .sort((a, b) => compareKeys(naturalKey(a), naturalKey(b)));
}

function credentials(args) {
  if (!args.ca) return grpc.credentials.createInsecure();
  const read = (file) => (file ? fs.readFileSync(file) : null);
  return grpc.credentials.createSsl(read(args.ca), read(args.key), read(args.cert));
}

function finite(value) {
  return Number.isFinite(value) ? value : null; // NaN threshold (warming up) -> null
}

function main() {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`stream_folder: ${error.message}\n`);
    return process.exit(2);
  }
  const definition = protoLoader.loadSync("alscout/v1/alscout.proto", {
    keepCase: true,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
    includeDirs: [args.protoRoot || PROTO_ROOT],
  });
  const alscout = grpc.loadPackageDefinition(definition).alscout.v1;
  const client = new alscout.Scorer(args.target, credentials(args));
  const metadata = new grpc.Metadata();
  if (args.tokenFile) {
    metadata.add("authorization", `Bearer ${fs.readFileSync(args.tokenFile, "utf8").trim()}`);
  }

  const images = listImages(args.folder);
  const stream = { recording_id: args.recordingId, camera_id: args.cameraId };
  const state = {
    lastDecided: -1, // highest frame whose final decision was printed
    token: "", // the stream's resume_token, from its results
    decided: 0,
    answered: 0,
    cutAfter: args.cutAfter === undefined ? null : Number(args.cutAfter),
  };

  const frameMessage = (index) => {
    const name = images[index];
    return {
      ...stream,
      frame_index: index,
      encoded: {
        data: fs.readFileSync(path.join(args.folder, name)),
        encoding: ENCODINGS[path.extname(name).toLowerCase()],
      },
      metadata: { file: name },
      resumable: true,
    };
  };

  const print = (result) => {
    for (const d of result.final_decisions) {
      if (Number(d.frame_index) <= state.lastDecided) continue; // seen before a cut
      state.lastDecided = Number(d.frame_index);
      state.decided += 1;
      const line = {
        recording_id: result.recording_id,
        camera_id: result.camera_id,
        frame_index: Number(d.frame_index),
        decision: DECISIONS[d.decision] || "unspecified",
        reason: d.reason,
        z: finite(d.z),
        smoothed: finite(d.smoothed),
        threshold: finite(d.threshold),
      };
      process.stdout.write(`${JSON.stringify(line)}\n`);
    }
  };

  // Writes frames `from`.. then the end_of_stream message, respecting flow control.
  const writeFrom = (call, from) => {
    let index = from;
    const writeMore = () => {
      while (index < images.length) {
        const ok = call.write(frameMessage(index));
        index += 1;
        if (!ok) {
          call.once("drain", writeMore);
          return;
        }
      }
      call.write({ ...stream, end_of_stream: true });
      call.end();
    };
    writeMore();
  };

  const attempt = (resume) => {
    const call = client.ScoreStream(metadata);
    let cut = false;
    call.on("data", (result) => {
      if (cut) return;
      if (result.resume_token) state.token = result.resume_token;
      print(result);
      if (result.resume) {
        const found = result.resume.found;
        const last = Number(result.resume.last_received_frame);
        process.stderr.write(`stream_folder: resumed found=${found} last_received=${last}\n`);
        writeFrom(call, found ? last + 1 : state.lastDecided + 1);
        return;
      }
      if (result.end_of_stream) return;
      state.answered += 1;
      if (state.cutAfter !== null && state.answered >= state.cutAfter) {
        state.cutAfter = null;
        cut = true;
        call.cancel(); // as a dropped link would; the server keeps the stream for resuming
        setTimeout(() => attempt(true), 100);
      }
    });
    call.on("error", (error) => {
      if (cut && error.code === grpc.status.CANCELLED) return;
      process.stderr.write(`stream_folder: ${grpc.status[error.code]}: ${error.details}\n`);
      process.exitCode = 1;
      client.close();
    });
    call.on("end", () => {
      if (cut) return;
      process.stderr.write(`stream_folder: ${state.decided} final decisions\n`);
      client.close();
    });
    if (resume) {
      const request = { last_decided_frame: state.lastDecided, resume_token: state.token };
      call.write({ ...stream, resume: request }); // frames follow its answer
    } else {
      writeFrom(call, 0);
    }
  };
  attempt(false);
}

main();
