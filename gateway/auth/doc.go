// Package auth owns the gateway's identities: password hashing, the signing
// key, access tokens, the users bucket with compare-and-swap updates, and the
// login rate limiter.
//
// Tokens are short-lived HS256 JWTs (default 30 minutes) with no refresh
// token: a client logs in again when its token expires. A refresh token would
// need server-side revocation state to be worth having; re-login keeps the
// only state in the users bucket, and the gateway re-reads the user on every
// privileged request, so a deleted or demoted user loses access at once
// rather than when the token expires.
package auth
