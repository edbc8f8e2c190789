package fleet

import (
	"net/http"

	"kanade-backend/http/httpx"
	"kanade-backend/http/internal/fleetkv"
	"kanade-backend/messages"
)

// scopeKey derives the agent_config key a request addresses, validating
// the path id that becomes part of it.
type scopeKey func(r *http.Request) (string, error)

func globalKey(*http.Request) (string, error) { return messages.ConfigKeyGlobal, nil }

func groupKey(r *http.Request) (string, error) {
	g := r.PathValue("name")
	if err := messages.ValidateToken("group", g); err != nil {
		return "", err
	}
	return messages.ConfigKeyGroup(g), nil
}

func pcKey(r *http.Request) (string, error) {
	pcID, err := pathPC(r)
	if err != nil {
		return "", err
	}
	return messages.ConfigKeyPC(pcID), nil
}

// getScope answers the stored scope, or {} when the scope is unset: an
// unset scope sets nothing, which is exactly what {} says.
func (h *handlers) getScope(key scopeKey) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		k, err := key(r)
		if err != nil {
			return err
		}
		kv, err := h.config.Open(r.Context())
		if err != nil {
			return err
		}
		scope, _, err := fleetkv.ReadScope(r.Context(), kv, k)
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, scope)
		return nil
	}
}

// putScope replaces the whole scope (PUT semantics; a rollout that changes
// one field goes through POST /api/agents/rollout, which keeps the others).
func (h *handlers) putScope(key scopeKey) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		k, err := key(r)
		if err != nil {
			return err
		}
		b, err := httpx.ReadBody(w, r, httpx.MaxBodyBytes)
		if err != nil {
			return err
		}
		scope, err := messages.ParseConfigScopeJSON(b)
		if err != nil {
			return messages.Invalidf("%v", err)
		}
		ctx := r.Context()
		kv, err := h.config.Open(ctx)
		if err != nil {
			return err
		}
		val, err := fleetkv.EncodeScope(scope)
		if err != nil {
			return err
		}
		rev, err := kv.Put(ctx, k, val)
		if err != nil {
			return messages.Unavailablef("write agent_config %s: %v", k, err)
		}
		h.recordAudit(r, messages.ActionConfigPut, k, map[string]any{
			"key": k, "scope": scope, "scope_label": fleetkv.ScopeLabel(k), "revision": rev,
		})
		httpx.WriteJSON(w, http.StatusOK, scope)
		return nil
	}
}

// deleteScope removes the scope; deleting an unset scope is a no-op 204
// (idempotent, and nothing to audit).
func (h *handlers) deleteScope(key scopeKey) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		k, err := key(r)
		if err != nil {
			return err
		}
		ctx := r.Context()
		kv, err := h.config.Open(ctx)
		if err != nil {
			return err
		}
		prev, found, err := fleetkv.ReadScope(ctx, kv, k)
		if err != nil {
			return err
		}
		if found {
			if err := kv.Delete(ctx, k); err != nil {
				return messages.Unavailablef("delete agent_config %s: %v", k, err)
			}
			h.recordAudit(r, messages.ActionConfigDelete, k, map[string]any{
				"key": k, "previous": prev, "scope_label": fleetkv.ScopeLabel(k),
			})
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
}
