package auth

import (
	"fmt"
	"strings"
)

// Environment variables that configure authentication.
const (
	EnvDisable     = "KANADE_AUTH_DISABLE"
	EnvStaticToken = "KANADE_AUTH_STATIC_TOKEN"
	EnvJWTSecret   = "KANADE_JWT_SECRET"
	// EnvJWTDefaultRole is the role of a JWT that carries no role claim
	// (default admin, which is what every JWT was before roles existed).
	EnvJWTDefaultRole = "KANADE_JWT_DEFAULT_ROLE"
)

// Config is the operator's choice of authentication; New turns it into a mode.
type Config struct {
	Disable     bool   // KANADE_AUTH_DISABLE set to a true value
	StaticToken string // KANADE_AUTH_STATIC_TOKEN
	JWTSecret   string // KANADE_JWT_SECRET
	// JWTDefaultRole is KANADE_JWT_DEFAULT_ROLE; empty means admin.
	JWTDefaultRole Role

	// Operators is where operator tokens are looked up (http/operators over
	// the SQL store). It is not an environment setting: the application
	// sets it. Nil accepts no operator tokens.
	Operators OperatorStore
}

// ConfigFromEnv reads the four variables through getenv (os.Getenv in
// production, a map lookup in tests).
//
// KANADE_AUTH_DISABLE counts only when its value is a true value (1, true,
// yes; case-insensitive, surrounding space ignored). Upstream disabled auth
// when the variable was merely present, so `KANADE_AUTH_DISABLE=0` opened the
// API — the opposite of what the operator wrote. Values that are neither true
// nor false are an error rather than a guess, because guessing wrong either
// opens the API or locks the operator out.
//
// The static token is trimmed: the bearer parser trims the presented token,
// so a stray newline from `$(cat token)` would otherwise make it unmatchable.
// The JWT secret is kept verbatim because it is key material shared with the
// token issuer, which signs with exactly the bytes it was given.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	disable, err := parseBool(getenv(EnvDisable))
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", EnvDisable, err)
	}
	var role Role
	if v := getenv(EnvJWTDefaultRole); strings.TrimSpace(v) != "" {
		if role, err = ParseRole(v); err != nil {
			return Config{}, fmt.Errorf("%s: %w", EnvJWTDefaultRole, err)
		}
	}
	return Config{
		Disable:        disable,
		StaticToken:    strings.TrimSpace(getenv(EnvStaticToken)),
		JWTSecret:      getenv(EnvJWTSecret),
		JWTDefaultRole: role,
	}, nil
}

// parseBool accepts the spellings operators use in environment files. Empty
// means unset, which is false.
func parseBool(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "true", "yes":
		return true, nil
	case "", "0", "false", "no":
		return false, nil
	}
	return false, fmt.Errorf("unrecognised value %q: want 1, true or yes to disable authentication, or 0, false, no or empty to keep it", s)
}
