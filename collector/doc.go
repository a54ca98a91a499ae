// Package collector turns what the introspection library sees in a guest
// into typed events: it runs one supervisor per guest (attach, event loop,
// detach, retry with backoff), decodes probe hits with the guest's OS layer,
// applies rules, and hands events to exporters through bounded queues.
//
// How a guest is reached is not here: an Attacher (collector/attach)
// returns a Session, whose OS layer provides the probes and whose hook
// engine runs them. A Session that implements Verifier is checked every
// Options.VerifyInterval; a failed check ends the session and the
// supervisor attaches again.
package collector
