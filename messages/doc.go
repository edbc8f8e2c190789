// Package messages is the kanade wire contract in Go (see wire.md): the
// JSON shapes exchanged with agents over NATS, stored in KV and accepted by
// the HTTP API, the subject, stream and bucket names, and the rules that
// keep user data usable as subject tokens and KV keys. Actors pass these
// same plain structs to each other, so that every component agrees on one
// reading of a payload: decoders fill the documented defaults and normalise
// timestamps to UTC, and encoders emit exactly the null-versus-omitted forms
// that agents and the upstream CLI expect.
//
// Durations are parsed by package humantime and cron expressions by package
// cron, both below this one.
package messages
