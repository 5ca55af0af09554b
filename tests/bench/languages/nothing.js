// The languages benchmark's do-nothing handler in JavaScript: the SDK
// parses the change, and nothing else happens.
export function onChange(change) {}
