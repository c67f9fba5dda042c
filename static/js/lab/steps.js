// The lesson's steps panel: which steps are done (with the time they took), the one to do now,
// "Check now" with the engine's verdict and hint, and a prediction box per step.
//
// Why the browser never decides: a step is marked done only from `progress` (in hello, or pushed by
// the consumer after it recorded the engine's passed check). `check` messages only show a verdict.
// Predictions are the student's own notes, kept in localStorage; nothing is graded on them.

// UI strings go through Django's JavaScript catalog (window.gettext / interpolate, loaded first).
const fmt = (s, obj) => interpolate(s, obj, true);

/** 7 s, 42 s, 3 min 05 s */
export function fmtDuration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return fmt(gettext("%(s)s s"), { s });
  return fmt(gettext("%(m)s min %(s)s s"), { m: Math.floor(s / 60), s: String(s % 60).padStart(2, "0") });
}

export class Steps {
  /**
   * @param {HTMLElement|null} root  the #steps section (absent when the lesson has no steps)
   * @param {{send: (cmd: object) => boolean, labState: () => string}} lab
   */
  constructor(root, lab) {
    this.root = root;
    this.lab = lab;
    this.progress = {};
    this.steps = [];
    this.lesson = "";
    this.verdicts = {}; // step -> {passed, text, hint}
    if (!root) return;
    try {
      const data = JSON.parse(document.getElementById("steps-data").textContent);
      this.steps = data.steps || [];
      this.progress = data.progress || {};
      this.lesson = data.lesson || "";
    } catch (err) {
      console.warn("steps: bad steps data", err);
    }
    for (const step of this.steps) {
      const li = this.item(step.id);
      if (!li) continue;
      const button = li.querySelector(".check-now");
      if (button) button.addEventListener("click", () => this.checkNow(step.id));
      const input = li.querySelector(".predict-input");
      if (input) {
        input.value = this.prediction(step.id);
        input.addEventListener("input", () => {
          try {
            localStorage.setItem(this.predictKey(step.id), input.value);
          } catch (err) { /* private mode: the box still works for this visit */ }
        });
        input.addEventListener("change", () => this.sendPrediction(step.id, input.value));
      }
    }
    this.render();
  }

  item(id) {
    return this.root ? this.root.querySelector(`li.step[data-step="${CSS.escape(id)}"]`) : null;
  }

  // The server keeps it too, so a workshop's projector can set the room's predictions beside the
  // values its labs measured. A number only; a failed send costs nothing but the projector's dot.
  sendPrediction(id, text) {
    const value = Number(String(text).replace(",", "."));
    const token = document.querySelector("input[name=csrfmiddlewaretoken]");
    if (text === "" || !Number.isFinite(value) || !token) return;
    fetch(`/stage/${encodeURIComponent(this.lesson)}/predict/`, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": token.value },
      body: JSON.stringify({ step: id, value }),
    }).catch(() => {});
  }

  predictKey(id) {
    return `scalelab:predict:${this.lesson}:${id}`;
  }

  prediction(id) {
    try {
      return localStorage.getItem(this.predictKey(id)) || "";
    } catch (err) {
      return "";
    }
  }

  checkNow(id) {
    if (this.lab.labState() !== "running") {
      this.verdicts[id] = { passed: false, text: gettext("Start the lab first, then check."), hint: "" };
      this.render();
      return;
    }
    if (this.lab.send({ action: "check", step: id })) {
      this.verdicts[id] = { passed: false, text: gettext("Checking…"), hint: "" };
      this.render();
    }
  }

  onMessage(msg) {
    if (!this.root) return;
    if ((msg.type === "hello" || msg.type === "progress") && msg.progress) {
      this.progress = msg.progress;
    } else if (msg.type === "check" && msg.step) {
      const step = this.steps.find((s) => s.id === msg.step);
      if (!step) return;
      const hint = typeof msg.hint === "number" ? step.hints[msg.hint] || "" : "";
      const text = msg.passed
        ? fmt(gettext("Passed: %(detail)s"), { detail: msg.detail || "" })
        : fmt(gettext("Not yet: %(detail)s"), { detail: msg.detail || "" });
      this.verdicts[msg.step] = { passed: !!msg.passed, text, hint };
    } else if (msg.type === "error" && msg.command && msg.command.action === "check" && msg.command.step) {
      this.verdicts[msg.command.step] = { passed: false, text: msg.message || "", hint: "" };
    } else {
      return;
    }
    this.render();
  }

  render() {
    if (!this.root) return;
    // The step to do now: the first checked step not yet done; steps without a check are read-only
    // text and never hold the next one back.
    const current = this.steps.find((s) => s.has_check && !this.progress[s.id]);
    let reached = false;
    this.steps.forEach((step) => {
      const li = this.item(step.id);
      if (!li) return;
      const done = this.progress[step.id];
      let state;
      if (done) state = "done";
      else if (current && step.id === current.id) state = "current";
      else if (!reached && !step.has_check) state = "open";
      else state = "locked";
      if (current && step.id === current.id) reached = true;
      li.dataset.state = state;
      li.classList.toggle("step-locked", state === "locked");
      const body = li.querySelector(".step-body");
      if (body) body.hidden = state === "locked";

      const mark = li.querySelector(".step-done");
      if (done) {
        const took = fmtDuration(done.seconds);
        mark.textContent = took ? `✓ ${fmt(gettext("done in %(time)s"), { time: took })}` : `✓ ${gettext("done")}`;
        mark.hidden = false;
      } else {
        mark.hidden = true;
      }

      const button = li.querySelector(".check-now");
      if (button) button.hidden = state !== "current";
      const verdict = li.querySelector(".verdict");
      if (verdict) {
        const v = this.verdicts[step.id];
        verdict.replaceChildren();
        if (v && state === "current") {
          verdict.dataset.passed = String(v.passed);
          verdict.append(v.text);
          if (v.hint) {
            const hint = document.createElement("span");
            hint.className = "hint";
            hint.dataset.testid = `hint-${step.id}`;
            hint.textContent = `${gettext("Hint:")} ${v.hint}`;
            verdict.append(document.createElement("br"), hint);
          }
        }
      }

      const input = li.querySelector(".predict-input");
      const result = li.querySelector(".predict-result");
      if (input && result) {
        input.readOnly = !!done;
        const mine = input.value.trim();
        if (done) {
          const unit = step.predict_unit ? ` ${step.predict_unit}` : "";
          const measured = typeof done.measured === "number"
            ? `${Math.round(done.measured * 100) / 100}${unit}`
            : done.detail || gettext("(no measurement)");
          result.textContent = fmt(gettext("You predicted: %(mine)s · measured: %(measured)s"), {
            mine: mine || gettext("(nothing)"),
            measured,
          });
          result.hidden = false;
        } else {
          result.hidden = true;
        }
      }
    });
  }
}
