// The baseline handler: the SDK reads the change's header, nothing else.
export function onChange(change) {}
