// Package auth authenticates the HTTP API: every /api/* request must carry
// a credential unless an operator explicitly opened the API. It resolves one
// of four modes at start-up, in precedence order (api.md §2): disabled
// (KANADE_AUTH_DISABLE set to a true value), a static bearer token
// (KANADE_AUTH_STATIC_TOKEN), HS256 JWTs (KANADE_JWT_SECRET), and, when
// nothing is configured, a generated token. The generated mode is the secure
// default: upstream fell back to a hard-coded JWT secret that anyone who had
// read the source could sign with, so an unconfigured install was open to
// the world. Here an unconfigured install instead creates a random token
// once, keeps it in the data directory readable only by the server's user,
// and hands it to the caller so the dashboard URL that carries it can be
// logged for the operator.
//
// On top of the mode, every person can have their own operator token
// (kanade_op_…, created by an admin through http/operators and stored there
// as a hash only). Operator tokens are accepted in every mode but disabled,
// are checked against the store on every request so that a revocation
// takes effect at once, and name the operator in the audit trail. The
// generated token is the first of them, the operator named admin.
//
// Authorization is by role (viewer < operator < admin): the route table in
// routes.go gives each /api route the role it requires, and Guard wraps each
// route's handler with that check (403 `forbidden: requires role <r>`). The
// static token is an admin; a JWT's role comes from its role claim, or
// KANADE_JWT_DEFAULT_ROLE when it has none.
package auth
