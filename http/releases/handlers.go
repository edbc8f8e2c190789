package releases

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/http/httpx"
	"kanade-backend/http/internal/fleetkv"
	"kanade-backend/http/internal/opaudit"
	"kanade-backend/messages"
)

// Release is one stored agent binary.
type Release struct {
	Version string `json:"version"`
	Size    uint64 `json:"size"`
	// Digest is the object store's "SHA-256=<base64url>".
	Digest   string    `json:"digest"`
	Modified time.Time `json:"modified"`
}

func toRelease(info *jetstream.ObjectInfo) Release {
	return Release{Version: info.Name, Size: info.Size, Digest: info.Digest, Modified: info.ModTime.UTC()}
}

// list answers the releases newest first (the one an operator usually
// wants to roll out), paged.
func (h *handlers) list(w http.ResponseWriter, r *http.Request) error {
	page, err := httpx.ParsePage(r)
	if err != nil {
		return err
	}
	obs, err := h.store.open(r.Context())
	if err != nil {
		return err
	}
	infos, err := obs.List(r.Context())
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		return messages.Unavailablef("list %s: %v", messages.ObjectStoreAgentReleases, err)
	}
	rows := make([]Release, 0, len(infos))
	for _, info := range infos {
		if !info.Deleted {
			rows = append(rows, toRelease(info))
		}
	}
	slices.SortFunc(rows, func(a, b Release) int {
		if c := b.Modified.Compare(a.Modified); c != 0 {
			return c
		}
		return cmp.Compare(a.Version, b.Version)
	})
	total := len(rows)
	lo := min(page.Offset, total)
	hi := min(lo+page.Limit, total)
	httpx.WriteList(w, rows[lo:hi], total)
	return nil
}

// PublishResponse answers POST /api/agents/publish.
type PublishResponse struct {
	Release
	// Source says where the version came from: "pe" (the binary's
	// version resource) or "field" (the form's version field).
	Source string `json:"source"`
	// Replaced is true when a release of that version existed before.
	Replaced bool `json:"replaced"`
}

// multipartMemory is how much of an upload is kept in memory; the rest
// spills to a temporary file, so a 64 MiB agent does not cost 64 MiB of
// heap per concurrent upload.
const multipartMemory = 8 << 20

func (h *handlers) publish(w http.ResponseWriter, r *http.Request) error {
	// A declared length beyond the limit is refused before reading a
	// byte; a chunked body is cut by MaxBytesReader at the limit.
	if r.ContentLength > h.maxUpload {
		return &http.MaxBytesError{Limit: h.maxUpload}
	}
	r.Body = http.MaxBytesReader(w, r.Body, h.maxUpload)
	if err := r.ParseMultipartForm(multipartMemory); err != nil {
		var maxErr *http.MaxBytesError
		switch {
		case errors.As(err, &maxErr):
			return err // 413
		case errors.Is(err, http.ErrNotMultipart), errors.Is(err, http.ErrMissingBoundary):
			return messages.Invalidf("body must be multipart/form-data with a 'file' field (and optionally 'version')")
		}
		return messages.Invalidf("invalid multipart body: %v", err)
	}
	defer func() { _ = r.MultipartForm.RemoveAll() }()

	files := r.MultipartForm.File["file"]
	if len(files) == 0 {
		return messages.Invalidf("missing 'file' field")
	}
	fh := files[0]
	if fh.Size == 0 {
		return messages.Invalidf("'file' field is empty")
	}
	f, err := fh.Open()
	if err != nil {
		return fmt.Errorf("open uploaded file: %w", err)
	}
	defer f.Close()

	field := ""
	if vs := r.MultipartForm.Value["version"]; len(vs) > 0 {
		field = strings.TrimSpace(vs[0])
	}
	version, source, err := releaseVersion(f, field)
	if err != nil {
		return err
	}
	if err := ValidateVersion(version); err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("rewind uploaded file: %w", err)
	}

	ctx := r.Context()
	obs, err := h.store.open(ctx)
	if err != nil {
		return err
	}
	replaced := false
	if _, err := obs.GetInfo(ctx, version); err == nil {
		replaced = true
	} else if !errors.Is(err, jetstream.ErrObjectNotFound) {
		return wrapObjErr("look up", version, err)
	}
	info, err := obs.Put(ctx, jetstream.ObjectMeta{
		Name:        version,
		Description: "kanade agent " + version + " (" + fh.Filename + ")",
	}, f)
	if err != nil {
		return wrapObjErr("store", version, err)
	}
	rel := toRelease(info)
	opaudit.Record(ctx, h.audit, h.log, messages.ActionAgentPublish, version, map[string]any{
		// "source" is the caller's X-Kanade-Source in every audit event
		// (wire.md §4), so where the version came from has its own key.
		"version": version, "size": rel.Size, "digest": rel.Digest, "version_source": source,
		"filename": fh.Filename, "replaced": replaced,
	})
	httpx.WriteJSON(w, http.StatusOK, PublishResponse{Release: rel, Source: source, Replaced: replaced})
	return nil
}

// releaseVersion decides the version of an upload: the binary's own
// version resource when it has one (a contradicting field is refused,
// ignoring a leading "v"), else the field, else a 400 that says what to do.
func releaseVersion(f multipart.File, field string) (version, source string, err error) {
	pev, err := PEVersion(f)
	switch {
	case err == nil:
		if field != "" && strings.TrimPrefix(field, "v") != strings.TrimPrefix(pev, "v") {
			return "", "", messages.Invalidf("version field '%s' disagrees with the binary's embedded version '%s'; "+
				"omit the field to use the embedded one, or pass the matching label", field, pev)
		}
		return pev, "pe", nil
	case !errors.Is(err, ErrNoVersionResource):
		return "", "", fmt.Errorf("read uploaded file: %w", err)
	case field == "":
		return "", "", messages.Invalidf("no version: the uploaded file carries no Windows version resource " +
			"(VS_VERSIONINFO ProductVersion/FileVersion); add a 'version' form field, e.g. version=0.21.2")
	}
	return field, "field", nil
}

func (h *handlers) delete(w http.ResponseWriter, r *http.Request) error {
	version := r.PathValue("version")
	if err := ValidateVersion(version); err != nil {
		return err
	}
	ctx := r.Context()
	obs, err := h.store.open(ctx)
	if err != nil {
		return err
	}
	info, err := obs.GetInfo(ctx, version)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return notFound(version)
	}
	if err != nil {
		return wrapObjErr("look up", version, err)
	}
	// Agents of a scope that targets this version would fail to download
	// it forever; the operator must point the scope elsewhere first.
	kv, err := h.config.Open(ctx)
	if err != nil {
		return err
	}
	scopes, err := fleetkv.All(ctx, kv)
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(scopes))
	for k := range scopes {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		s, err := fleetkv.DecodeScope(scopes[k])
		if err != nil {
			continue // an undecodable scope targets nothing an agent can read either
		}
		if s.TargetVersion != nil && *s.TargetVersion == version {
			return messages.Conflictf("version '%s' is the target_version of scope '%s'; clear or change that scope first",
				version, fleetkv.ScopeLabel(k))
		}
	}
	if err := obs.Delete(ctx, version); err != nil {
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			return notFound(version)
		}
		return wrapObjErr("delete", version, err)
	}
	opaudit.Record(ctx, h.audit, h.log, messages.ActionReleaseDelete, version, map[string]any{
		"version": version, "size": info.Size, "digest": info.Digest,
	})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// RolloutRequest is the body of POST /api/agents/rollout.
type RolloutRequest struct {
	Version string        `json:"version"`
	Scope   *RolloutScope `json:"scope"`
	// Jitter (humantime) sets target_version_jitter on the same scope;
	// absent or null leaves the scope's jitter as it is.
	Jitter *string `json:"jitter"`
}

// RolloutScope names the agent_config scope a rollout writes.
type RolloutScope struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// RolloutResponse answers a rollout.
type RolloutResponse struct {
	Version    string  `json:"version"`
	ScopeKey   string  `json:"scope_key"`
	ScopeLabel string  `json:"scope_label"`
	Jitter     *string `json:"jitter"`
}

// key validates the scope and returns its agent_config key.
func (s *RolloutScope) key() (string, error) {
	if s == nil {
		return "", messages.Invalidf(`scope is required: {"type": "global"} or {"type": "group"|"pc", "value": "<name>"}`)
	}
	v := strings.TrimSpace(s.Value)
	switch s.Type {
	case "global":
		if v != "" {
			return "", messages.Invalidf("scope.value must be empty for type global")
		}
		return messages.ConfigKeyGlobal, nil
	case "group", "pc":
		if v == "" {
			return "", messages.Invalidf("scope.value is required for type %s", s.Type)
		}
		kind := map[string]string{"group": "group", "pc": "pc_id"}[s.Type]
		if err := messages.ValidateToken(kind, v); err != nil {
			return "", err
		}
		if s.Type == "group" {
			return messages.ConfigKeyGroup(v), nil
		}
		return messages.ConfigKeyPC(v), nil
	}
	return "", messages.Invalidf("invalid scope.type %q: must be global, group or pc", s.Type)
}

func (h *handlers) rollout(w http.ResponseWriter, r *http.Request) error {
	var req RolloutRequest
	if err := httpx.DecodeJSON(w, r, &req); err != nil {
		return err
	}
	req.Version = strings.TrimSpace(req.Version)
	if err := ValidateVersion(req.Version); err != nil {
		return err
	}
	key, err := req.Scope.key()
	if err != nil {
		return err
	}
	var jitter *messages.Duration
	if req.Jitter != nil && strings.TrimSpace(*req.Jitter) != "" {
		j := messages.Duration(strings.TrimSpace(*req.Jitter))
		if _, err := j.Parse(); err != nil {
			return messages.Invalidf("invalid jitter: %v", err)
		}
		jitter = &j
	}

	ctx := r.Context()
	obs, err := h.store.open(ctx)
	if err != nil {
		return err
	}
	if _, err := obs.GetInfo(ctx, req.Version); errors.Is(err, jetstream.ErrObjectNotFound) {
		return messages.NotFoundf("version '%s' not found in %s; publish it first", req.Version, messages.ObjectStoreAgentReleases)
	} else if err != nil {
		return wrapObjErr("look up", req.Version, err)
	}

	kv, err := h.config.Open(ctx)
	if err != nil {
		return err
	}
	var previous messages.ConfigScope
	// Compare-and-set keeps the scope's other fields (heartbeat_interval)
	// and any edit that lands while the rollout writes.
	_, rev, err := fleetkv.UpdateScope(ctx, kv, key, func(s *messages.ConfigScope) (bool, error) {
		previous = *s
		changed := s.TargetVersion == nil || *s.TargetVersion != req.Version
		v := req.Version
		s.TargetVersion = &v
		if jitter != nil {
			changed = changed || s.TargetVersionJitter == nil || *s.TargetVersionJitter != *jitter
			s.TargetVersionJitter = jitter
		}
		if err := s.Validate(); err != nil {
			// Only a value stored by another tool can fail here.
			return false, messages.Conflictf("scope '%s' holds an invalid value (%v); fix it with PUT first", fleetkv.ScopeLabel(key), err)
		}
		return changed, nil
	})
	if err != nil {
		return err
	}
	resp := RolloutResponse{Version: req.Version, ScopeKey: key, ScopeLabel: fleetkv.ScopeLabel(key)}
	if jitter != nil {
		j := string(*jitter)
		resp.Jitter = &j
	}
	var prevVersion any
	if previous.TargetVersion != nil {
		prevVersion = *previous.TargetVersion
	}
	opaudit.Record(ctx, h.audit, h.log, messages.ActionAgentRollout, req.Version, map[string]any{
		"version": req.Version, "scope_key": key, "scope_label": resp.ScopeLabel,
		"jitter": resp.Jitter, "previous_version": prevVersion, "revision": rev,
	})
	httpx.WriteJSON(w, http.StatusOK, resp)
	return nil
}
