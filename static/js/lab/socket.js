// The lab's WebSocket: one connection per page, reconnecting with backoff.
//
// Why a wrapper: a reload, a daphne restart or a flaky network must not lose the lab. The
// consumer greets every new connection with a `hello` carrying the whole current state, so
// reconnecting and re-rendering from that hello is all "resume" needs.

const MIN_DELAY_MS = 1000;
const MAX_DELAY_MS = 5000;
// The consumer closes with these when retrying cannot help (no session / no such lab / too many of
// the session's pages open / a message too big / not staff, on a watch page): the user must act,
// then reload. 1009 is "message too big" from daphne itself (core/daphne_serve.py), 4009 the same
// from the consumer.
const FINAL_CODES = new Set([4401, 4404, 4429, 1009, 4009, 4403]);

export class LabSocket {
  /**
   * @param {string} path   the consumer's path, e.g. "/ws/lab/single-server/"
   * @param {{onMessage: (msg: object) => void, onConnection: (state: string, retryInMs?: number, code?: number) => void}} handlers
   */
  constructor(path, { onMessage, onConnection }) {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    this.url = `${scheme}://${location.host}${path}`;
    this.onMessage = onMessage;
    this.onConnection = onConnection;
    this.delay = MIN_DELAY_MS;
    this.ws = null;
    this.closedByUs = false;
  }

  connect() {
    this.closedByUs = false;
    this.onConnection("connecting");
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.addEventListener("open", () => {
      this.delay = MIN_DELAY_MS;
      this.onConnection("open");
    });
    ws.addEventListener("message", (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (err) {
        console.warn("lab socket: not JSON", ev.data);
        return;
      }
      this.onMessage(msg);
    });
    ws.addEventListener("close", (ev) => {
      if (this.ws !== ws || this.closedByUs) return;
      if (FINAL_CODES.has(ev.code)) {
        this.onConnection("refused", 0, ev.code);
        return;
      }
      const wait = this.delay;
      this.delay = Math.min(this.delay * 2, MAX_DELAY_MS);
      this.onConnection("closed", wait);
      setTimeout(() => this.connect(), wait);
    });
    // An error is always followed by close; the close handler does the retrying.
  }

  /** Send a command; returns false when the socket is not open (the caller tells the user). */
  send(command) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(command));
    return true;
  }

  close() {
    this.closedByUs = true;
    if (this.ws) this.ws.close();
  }
}
