// Errors of pulsec-client. Each carries a `code` named after the C library's status codes
// (PS_ECLOSED, PS_ETIMEDOUT, PS_EREMOTE) so that logs read the same on both sides.

/** Base class of every error this package creates. */
export class PulseError extends Error {
  /**
   * @param {string} message
   * @param {string} code
   */
  constructor(message, code) {
    super(message);
    this.name = new.target.name;
    this.code = code;
  }
}

/**
 * The channel is closed: by `close()`, by the server's `__close__`, because the connection
 * dropped, or because the client was closed. `reason` says which: "local", "remote",
 * "disconnect" or "client".
 */
export class ChannelClosed extends PulseError {
  /**
   * @param {string} [message]
   * @param {{ channel?: string, reason?: string }} [info]
   */
  constructor(message = "Channel closed", info = {}) {
    super(message, "ECLOSED");
    this.channel = info.channel;
    this.reason = info.reason ?? "local";
  }
}

/** A request got no answer within its timeout. */
export class ChannelTimeout extends PulseError {
  /**
   * @param {string} message
   * @param {{ channel?: string, event?: string, timeout?: number }} [info]
   */
  constructor(message, info = {}) {
    super(message, "ETIMEDOUT");
    this.channel = info.channel;
    this.event = info.event;
    this.timeout = info.timeout;
  }
}

/** The other side answered a request with an error; `message` is its text. */
export class ChannelError extends PulseError {
  /**
   * @param {string} message
   * @param {{ channel?: string, event?: string }} [info]
   */
  constructor(message, info = {}) {
    super(message, "EREMOTE");
    this.channel = info.channel;
    this.event = info.event;
  }
}

/**
 * An attach failed. With code "EREMOTE", `message` is the server's `attach_error` text; with
 * code "ECLOSED", the view was detached or the client closed before the server answered.
 */
export class AttachError extends PulseError {
  /**
   * @param {string} message
   * @param {{ path?: string, attachId?: string, code?: string }} [info]
   */
  constructor(message, info = {}) {
    super(message, info.code ?? "EREMOTE");
    this.path = info.path;
    this.attachId = info.attachId;
  }
}
