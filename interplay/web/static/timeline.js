// The live timeline: what the user said, what the assistant said, each delegation with its status,
// its tool calls and how its result surfaced, errors and barge-ins; and per-turn lateness.
// It reads the bridge's "turn" messages (the output chunk as timeline.jsonl records it).

const short = (name, prefix) => (name || "").replace(prefix, "").toLowerCase();

export class Timeline {
  constructor(list, counters, lateCanvas, lateLabel) {
    this.list = list;
    this.counters = counters;
    this.lateCanvas = lateCanvas;
    this.lateLabel = lateLabel;
    this.tasks = new Map(); // task_id -> {li, status, tools}
    this.saying = null; // the assistant's current utterance entry
    this.quietTurns = 0;
    this.lateness = [];
  }

  add(kind, who, text, turn) {
    const li = document.createElement("li");
    li.dataset.kind = kind;
    const t = document.createElement("span");
    t.className = "turn";
    t.textContent = turn === undefined ? "" : `t${turn}`;
    const w = document.createElement("span");
    w.className = "who";
    w.textContent = who;
    const body = document.createElement("span");
    body.className = "body";
    body.textContent = text;
    li.append(t, w, body);
    this.list.append(li);
    li.scrollIntoView({ block: "nearest" });
    return li;
  }

  task(id, turn) {
    if (!this.tasks.has(id)) {
      const li = this.add("delegation", "delegation", "", turn);
      li.dataset.task = id;
      const status = document.createElement("span");
      status.className = "status";
      li.append(status);
      const steps = document.createElement("ul");
      steps.className = "steps";
      li.append(steps);
      this.tasks.set(id, { li, status, steps });
    }
    return this.tasks.get(id);
  }

  step(id, kind, text, turn) {
    const t = this.task(id, turn);
    const li = document.createElement("li");
    li.dataset.kind = kind;
    li.textContent = `t${turn} ${text}`;
    t.steps.append(li);
    return t;
  }

  setStatus(id, status, turn) {
    const t = this.task(id, turn);
    t.status.textContent = status;
    t.li.dataset.status = status;
  }

  onTurn(m) {
    const c = this.counters;
    c.turns += 1;
    c.lastTurn = m.turn;
    const timing = m.timing || {};
    const late = timing.lateness_ms || 0;
    c.maxLatenessMs = Math.max(c.maxLatenessMs, late);
    if (timing.missed) c.missedTurns += 1;
    this.lateness.push(late);
    if (this.lateness.length > 150) this.lateness.shift();
    this.drawLateness(late);
    for (const e of m.events || []) this.onEvent(e, m.turn);
    if (m.text) {
      if (!this.saying) this.saying = this.add("assistant", "assistant", "", m.turn);
      this.saying.querySelector(".body").textContent += m.text;
      this.quietTurns = 0;
    } else if (this.saying && ++this.quietTurns >= 2) {
      this.saying = null;
    }
    if ((m.controls || []).includes("CONTROL_TOKEN_STOP_SPEAKING")) this.saying = null;
  }

  onEvent(e, turn) {
    const c = this.counters;
    const kind = short(e.kind, "EVENT_KIND_");
    const update = short(e.update, "EVENT_UPDATE_");
    switch (kind) {
      case "session_started":
        if (e.attrs && e.attrs.replay_file) {
          c.replayFile = e.attrs.replay_file;
          this.add("session", "saved", `this session is saved for replay: ${e.attrs.replay_file}`, turn);
        }
        break;
      case "user_transcript":
        if (update === "final") {
          c.transcripts.push(e.text);
          const li = this.add("user", "you", e.text, turn);
          if (e.low_confidence) li.dataset.low = "1";
        }
        break;
      case "delegation_started": {
        c.delegations.push({ task_id: e.task_id, task: e.text, policy: e.policy });
        const t = this.task(e.task_id, turn);
        t.li.querySelector(".body").textContent = `${e.text}  [${e.policy || "direct"}]`;
        this.setStatus(e.task_id, "started", turn);
        break;
      }
      case "progress":
        if (update === "tool_result") this.step(e.task_id, "tool_result", `tool result: ${e.text}`, turn);
        else if (update === "partial") break;
        else if (update === "steered" || update === "steer_refused") this.step(e.task_id, update, `${update}: ${e.text}`, turn);
        else if (update === "progress") this.step(e.task_id, "progress", e.text, turn);
        if (["accepted", "queued", "final"].includes(update)) this.setStatus(e.task_id, update === "final" ? "result received" : update, turn);
        break;
      case "tool_call": {
        const call = e.tool_call || {};
        c.toolCalls.push(e.text);
        this.step(e.task_id, "tool_call", `tool call: ${call.name || e.text}(${call.arguments_json || ""})`, turn);
        break;
      }
      case "result_surfaced": {
        const mode = short(e.mode, "SURFACING_MODE_");
        const how = `${mode}${e.voiced ? ", voiced" : ", context only"}`;
        c.surfaced.push({ task_id: e.task_id, update, mode, voiced: !!e.voiced, text: e.text,
          audioReceivedBefore: c.audioChunksReceived }); // what the assistant said after it: played beyond this
        this.step(e.task_id, "surfaced", `surfaced (${update}, ${how}): ${e.text}`, turn);
        if (update === "final") this.setStatus(e.task_id, `done: ${how}`, turn);
        else if (update === "error" || update === "cancelled") this.setStatus(e.task_id, update, turn);
        break;
      }
      case "error":
        c.errors.push((e.error && e.error.code) || "error");
        if (e.task_id) this.setStatus(e.task_id, `error: ${(e.error && e.error.code) || ""}`, turn);
        this.add("error", "error", `${(e.error && e.error.code) || ""} ${e.text || ""}`, turn);
        break;
      case "barge_in":
        this.add("barge_in", "barge-in", e.text || "you talked over the assistant", turn);
        break;
      case "output_dropped":
        this.add("error", "dropped", `${e.dropped} turns dropped: this page read too slowly`, turn);
        break;
      default:
        break;
    }
  }

  drawLateness(last) {
    const g = this.lateCanvas.getContext("2d");
    const w = this.lateCanvas.width;
    const h = this.lateCanvas.height;
    g.clearRect(0, 0, w, h);
    const top = Math.max(20, ...this.lateness);
    g.fillStyle = "#4a7";
    const bw = w / 150;
    this.lateness.forEach((v, i) => {
      const bh = (v / top) * (h - 2);
      g.fillStyle = v > 50 ? "#c44" : "#4a7";
      g.fillRect(i * bw, h - bh, Math.max(1, bw - 0.5), bh);
    });
    this.lateLabel.textContent = `lateness ${last.toFixed(1)} ms (max ${this.counters.maxLatenessMs.toFixed(1)}), ` +
      `${this.counters.missedTurns} missed, turn ${this.counters.lastTurn}`;
  }
}
