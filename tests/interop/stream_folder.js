#!/usr/bin/env node
// A client of alscout.v1.Scorer built on another gRPC implementation (@grpc/grpc-js with
// @grpc/proto-loader): streams the JPEG/PNG images of a folder, in natural name order,
// as one stream and prints every final decision as one JSON line on stdout, in the
// format of `alscout stream --out` (docs/operations.md).
//
//   node stream_folder.js --target 127.0.0.1:50051 --folder frames/ \
//       --recording-id rec1 --camera-id front [--ca ca.pem [--cert c.crt --key c.key]]
//       [--token-file token]
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

  const call = client.ScoreStream(metadata);
  let decided = 0;
  call.on("data", (result) => {
    for (const d of result.final_decisions) {
      decided += 1;
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
  });
  call.on("error", (error) => {
    process.stderr.write(`stream_folder: ${grpc.status[error.code]}: ${error.details}\n`);
    process.exitCode = 1;
  });
  call.on("end", () => {
    process.stderr.write(`stream_folder: ${decided} final decisions\n`);
    client.close();
  });

  const images = listImages(args.folder);
  let index = 0;
  const writeMore = () => {
    while (index < images.length) {
      const name = images[index];
      const frame = {
        recording_id: args.recordingId,
        camera_id: args.cameraId,
        frame_index: index,
        encoded: {
          data: fs.readFileSync(path.join(args.folder, name)),
          encoding: ENCODINGS[path.extname(name).toLowerCase()],
        },
        metadata: { file: name },
      };
      index += 1;
      if (!call.write(frame)) {
        call.once("drain", writeMore); // respect flow control
        return;
      }
    }
    call.end();
  };
  writeMore();
}

main();
