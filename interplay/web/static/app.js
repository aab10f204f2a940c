// The page: one WebSocket to the bridge (/ws), the microphone in, the assistant's voice out, an
// optional camera, a text box, and the live timeline. `window.interplay` holds the counters a test
// or a curious user reads (frames sent and dropped, audio chunks played, transcripts, delegations...).
//
// Wire (interplay/web/bridge.py): binary 0x01+PCM16 (mic, and the assistant's audio back), 0x02+JPEG
// (camera); JSON text {"type": "text"|"barge_in"|"stop"} up, {"type": "session"|"turn"|"error"|"closed"} down.

import { startCamera, startMic } from "./media.js";
import { Player } from "./player.js";
import { Timeline } from "./timeline.js";

const TAG_AUDIO = 0x01;
const TAG_JPEG = 0x02;
const MAX_BUFFERED = 64 * 1024; // bytes queued on the socket (~2 s of mic) before mic frames are dropped
const BARGE_RMS = 0.03; // the user talks over the assistant: this loud ...
const BARGE_FRAMES = 6; // ... for this many 20 ms frames in a row ...
const QUIET_FRAMES = 10; // ... after a pause this long (someone already talking when the assistant starts,
// e.g. under its backchannel, is not barging in until they pause and start again)

const counters = (window.interplay = {
  connected: false, closed: "", sessionId: "", turns: 0, lastTurn: -1, missedTurns: 0, maxLatenessMs: 0,
  micFramesSent: 0, micFramesDropped: 0, cameraFramesSent: 0, cameraFramesDropped: 0, textsSent: 0,
  audioChunksReceived: 0, audioChunksPlayed: 0, audioChunksDropped: 0, audioUnderruns: 0, audioSecondsPlayed: 0,
  bargeIns: 0, transcripts: [], delegations: [], toolCalls: [], surfaced: [], errors: [], bridgeErrors: [],
  replayFile: "", // where the server saves this session for replay, when "Save for replay" was checked
});

const $ = (id) => document.getElementById(id);
const timeline = new Timeline($("timeline"), counters, $("lateness"), $("lateness-label"));
let ws = null;
let ctx = null;
let player = null;
let stopMic = null;
let stopCamera = null;
let audioRate = 16000;
let loud = 0; // mic frames in a row above BARGE_RMS
let quiet = 0; // ... and below it
let armed = false; // a barge-in may fire: the user was quiet when the assistant started, or paused since

function status(text) {
  $("status").textContent = text;
}

function sendJson(obj) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
}

function sendTagged(tag, buffer, dropCounter) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return false;
  if (ws.bufferedAmount > MAX_BUFFERED) { // back-pressure: the bridge is behind, drop rather than queue
    counters[dropCounter] += 1;
    return false;
  }
  const msg = new Uint8Array(buffer.byteLength + 1);
  msg[0] = tag;
  msg.set(new Uint8Array(buffer), 1);
  ws.send(msg);
  return true;
}

function onMicFrame(pcm, rms) {
  if (sendTagged(TAG_AUDIO, pcm, "micFramesDropped")) counters.micFramesSent += 1;
  // barge-in by talking: speech that starts while the assistant's voice plays silences it and tells the session
  const speaking = rms > BARGE_RMS;
  loud = speaking ? loud + 1 : 0;
  quiet = speaking ? 0 : quiet + 1;
  if (!player || !player.active()) {
    armed = quiet >= QUIET_FRAMES;
    return;
  }
  if (quiet >= QUIET_FRAMES) armed = true;
  if (armed && loud === BARGE_FRAMES) {
    armed = false;
    player.flush();
    counters.bargeIns += 1;
    sendJson({ type: "barge_in" });
  }
}

function onMessage(ev) {
  if (typeof ev.data !== "string") {
    const bytes = new Uint8Array(ev.data);
    if (bytes[0] === TAG_AUDIO && player) {
      counters.audioChunksReceived += 1;
      player.push(ev.data.slice(1), audioRate);
    }
    return;
  }
  const m = JSON.parse(ev.data);
  if (m.type === "turn") {
    if (m.audio_rate) audioRate = m.audio_rate;
    timeline.onTurn(m);
  } else if (m.type === "session") {
    counters.sessionId = m.session_id;
    status(`connected: session ${m.session_id}`);
  } else if (m.type === "error") {
    counters.bridgeErrors.push(m.code);
    timeline.add("error", "bridge", `${m.code}: ${m.message}`);
  } else if (m.type === "closed") {
    counters.closed = m.reason;
  }
}

async function start() {
  $("start").disabled = true;
  ctx = new AudioContext({ sampleRate: 16000 }); // the native rate both ways (the worklet resamples if refused)
  await ctx.resume();
  player = new Player(ctx, counters);
  const url = new URL("ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  if ($("record").checked) url.searchParams.set("record", "1"); // the server saves the session for replay
  $("record").disabled = true;
  ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  ws.onmessage = onMessage;
  ws.onclose = () => {
    counters.connected = false;
    status(`disconnected${counters.closed ? `: ${counters.closed}` : ""}`);
    $("start").disabled = false;
    stopAll();
  };
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error("the bridge did not answer"));
  });
  counters.connected = true;
  $("stop").disabled = false;
  $("camera").disabled = false;
  try {
    stopMic = await startMic(ctx, onMicFrame);
    status(`listening: session ${counters.sessionId}`);
  } catch (err) {
    timeline.add("error", "mic", `no microphone: ${err.message}; type below instead`);
  }
}

function stopAll() {
  if (stopMic) stopMic();
  if (stopCamera) stopCamera();
  stopMic = stopCamera = null;
  if (player) player.flush();
}

$("start").onclick = () => start().catch((err) => { status(`error: ${err.message}`); $("start").disabled = false; });
$("stop").onclick = () => {
  sendJson({ type: "stop" });
  stopAll();
  $("stop").disabled = true;
};
$("camera").onclick = async () => {
  if (stopCamera) {
    stopCamera();
    stopCamera = null;
    return;
  }
  try {
    stopCamera = await startCamera($("video"), (jpeg) => {
      if (sendTagged(TAG_JPEG, jpeg, "cameraFramesDropped")) counters.cameraFramesSent += 1;
    });
  } catch (err) {
    timeline.add("error", "camera", `no camera: ${err.message}`);
  }
};
$("say").onsubmit = (ev) => {
  ev.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  sendJson({ type: "text", text });
  counters.textsSent += 1;
  timeline.add("typed", "you (typed)", text, counters.lastTurn + 1);
  $("text").value = "";
};
window.addEventListener("pagehide", () => ws && ws.close());
