// Command kanade-backend is the kanade server: job catalog, schedules,
// fan-out, projection of fleet reports into SQL, JSON API and dashboard.
// With no flags it runs self-contained: embedded NATS with JetStream on
// 127.0.0.1:4222, SQLite in ./data, HTTP on 127.0.0.1:8080.
package main

import (
	"os"

	"kanade-backend/cmd/kanade-backend/app"
)

func main() {
	os.Exit(app.Main(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}
