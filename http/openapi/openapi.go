// Package openapi serves the OpenAPI 3 description of the whole HTTP API at
// GET /api/openapi.json. The document is kept by hand in openapi.yaml
// (YAML reads and reviews better than JSON) and converted to JSON once.
// Its tests hold it to the router: every registered route must be
// documented, and the API-wide robustness test drives every documented
// operation with hostile input.
package openapi

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"

	"go.yaml.in/yaml/v3"

	"kanade-backend/http/server"
)

//go:embed openapi.yaml
var source []byte

// JSON returns the document as JSON.
var JSON = sync.OnceValues(func() ([]byte, error) {
	var doc map[string]any
	if err := yaml.Unmarshal(source, &doc); err != nil {
		return nil, fmt.Errorf("parse openapi.yaml: %w", err)
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("openapi.yaml as JSON: %w", err)
	}
	return b, nil
})

// Register adds GET /api/openapi.json.
func Register(r *server.Router) {
	r.API("GET /api/openapi.json", func(w http.ResponseWriter, _ *http.Request) error {
		b, err := JSON()
		if err != nil {
			return err
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
		return nil
	})
}
