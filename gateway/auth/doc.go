// Package auth owns the gateway's identities: canonical usernames, password
// hashing, the signing key, access tokens and their revocation (Sessions),
// the users bucket with compare-and-swap updates, and the rate limits on
// password checks (Guard).
//
// Tokens are short-lived HS256 JWTs (default 30 minutes) with no refresh
// token: a client logs in again when its token expires. A token names its
// account's stable ID and token generation; Users bumps the generation on a
// password, role or disabled change, and Sessions refuses a token whose
// account is gone, was re-created, or has moved to a later generation. That
// check runs on every request from an in-memory mirror of the users bucket
// kept by a KV watch, so revocation costs a map lookup, not a round trip.
package auth
