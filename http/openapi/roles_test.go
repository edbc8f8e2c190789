package openapi_test

import (
	"strings"
	"testing"

	"kanade-backend/http/auth"
)

// Every /api operation of the document states, in x-kanade-role, exactly
// the role the server's route table enforces, and documents the 403 when
// a viewer may not use it; every route of the table is documented.
func TestEveryOperationDocumentsItsRole(t *testing.T) {
	d := loadDocument(t)
	table := map[string]auth.Role{}
	for pattern, role := range auth.RouteRoles() {
		method, path, _ := strings.Cut(pattern, " ")
		table[method+" "+normalize(path)] = role
	}
	paths := d.raw["paths"].(map[string]any)
	documented := map[string]bool{}
	for _, op := range d.ops {
		if !strings.HasPrefix(op.Path, "/api/") {
			continue
		}
		key := op.Method + " " + normalize(op.Path)
		documented[key] = true
		raw := paths[op.Path].(map[string]any)[strings.ToLower(op.Method)].(map[string]any)
		got, _ := raw["x-kanade-role"].(string)
		want, inTable := table[key]
		switch {
		case !inTable:
			t.Errorf("%s: documented, but the route table (http/auth/routes.go) has no role for it", op.key())
		case got != string(want):
			t.Errorf("%s: x-kanade-role %q, the route table says %q", op.key(), got, want)
		}
		if inTable && want != auth.RoleViewer && !op.Statuses[403] {
			t.Errorf("%s: requires %s but documents no 403", op.key(), want)
		}
	}
	for key := range table {
		if !documented[key] {
			t.Errorf("route table entry %s is not documented in openapi.yaml", key)
		}
	}
}
