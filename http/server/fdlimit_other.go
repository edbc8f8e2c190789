//go:build !unix

package server

// fdLimit is unknown here; DefaultMaxConns falls back to 1024.
func fdLimit() uint64 { return 0 }
