// pulsec-client: the browser side of pulsec. Real-time channels (emit, request, on) and views
// over Socket.IO. React bindings live in "pulsec-client/react".

export { createClient, PulseClient } from "./client.js";
export { Channel } from "./channel.js";
export { View } from "./view.js";
export {
  PulseError,
  ChannelClosed,
  ChannelTimeout,
  ChannelError,
  AttachError,
} from "./errors.js";
