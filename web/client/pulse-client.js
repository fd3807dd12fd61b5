// The browser client. Its single source is web/dashboard/pulse-client.js, which
// the gateway serves to the dashboard at `/pulse-client.js`; this module
// re-exports it for applications.
export * from '../dashboard/pulse-client.js';
export { default } from '../dashboard/pulse-client.js';
