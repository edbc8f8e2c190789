// Package releases serves the agent self-update area: the agent binaries
// kept in the object store agent_releases (key = version), their upload
// and deletion, and the rollout that points a configuration scope at a
// version (agents compare their own version with the effective
// target_version and fetch the binary).
//
// A release's version comes from the binary itself when it is a Windows PE
// with a version resource (ProductVersion, else FileVersion): a label that
// disagrees with the binary caused upstream's endless self-update loop, so
// an explicit `version` field that contradicts the resource is refused.
// The field names the release when the binary has no version resource
// (a Linux or macOS build). Versions are object names, not subject tokens:
// dots are allowed, see ValidateVersion.
package releases

import (
	"context"
	"io"
	"log/slog"
	"regexp"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/http/httpx"
	"kanade-backend/http/internal/fleetkv"
	"kanade-backend/http/internal/opaudit"
	"kanade-backend/http/server"
	"kanade-backend/messages"
)

// JetStream is the part of jetstream.JetStream the routes use.
type JetStream interface {
	fleetkv.Opener
	ObjectStore(ctx context.Context, bucket string) (jetstream.ObjectStore, error)
}

// Objects is the part of a jetstream.ObjectStore the routes use.
type Objects interface {
	Put(ctx context.Context, meta jetstream.ObjectMeta, r io.Reader) (*jetstream.ObjectInfo, error)
	GetInfo(ctx context.Context, name string, opts ...jetstream.GetObjectInfoOpt) (*jetstream.ObjectInfo, error)
	Delete(ctx context.Context, name string) error
	List(ctx context.Context, opts ...jetstream.ListObjectsOpt) ([]*jetstream.ObjectInfo, error)
}

// UploadTimeout bounds reading a release upload (64 MiB at about
// 110 KB/s).
const UploadTimeout = 10 * time.Minute

// Deps is what the routes need.
type Deps struct {
	JS     JetStream
	Audit  opaudit.Publisher
	Logger *slog.Logger
	// MaxUploadBytes limits a publish body; 0 means
	// httpx.MaxPublishBodyBytes (64 MiB, api.md §1).
	MaxUploadBytes int64
}

type handlers struct {
	store     *objectStore
	config    *fleetkv.Bucket
	audit     opaudit.Publisher
	log       *slog.Logger
	maxUpload int64
}

// Register adds the routes.
func Register(r *server.Router, d Deps) {
	h := &handlers{
		store:     &objectStore{js: d.JS, name: messages.ObjectStoreAgentReleases},
		config:    fleetkv.NewBucket(d.JS, messages.BucketAgentConfig),
		audit:     d.Audit,
		log:       d.Logger,
		maxUpload: d.MaxUploadBytes,
	}
	if h.maxUpload <= 0 {
		h.maxUpload = httpx.MaxPublishBodyBytes
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	r.API("GET /api/agents/releases", h.list)
	// 64 MiB take longer than the server's read timeout on a slow link.
	r.API("POST /api/agents/publish", h.publish, server.BodyTimeout(UploadTimeout))
	r.API("DELETE /api/agents/releases/{version}", h.delete)
	r.API("POST /api/agents/rollout", h.rollout)
}

// objectStore opens agent_releases on first use (NATS may be away at
// start) and keeps the handle.
type objectStore struct {
	js   JetStream
	name string

	mu  sync.Mutex
	obs Objects
}

func (o *objectStore) open(ctx context.Context) (Objects, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.obs != nil {
		return o.obs, nil
	}
	if o.js == nil {
		return nil, messages.Unavailablef("object store %s unavailable: no JetStream connection", o.name)
	}
	obs, err := o.js.ObjectStore(ctx, o.name)
	if err != nil {
		return nil, messages.Unavailablef("object store %s unavailable: %v", o.name, err)
	}
	o.obs = obs
	return obs, nil
}

// MaxVersionLen bounds a version name.
const MaxVersionLen = 128

var versionRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]*$`)

// ValidateVersion checks a release version. It is an object name and a
// value agents compare, never a subject token, so dots are fine ("0.21.2",
// "1.0.0-rc.1+build.5"); it must start with a letter or digit so it can
// never be mistaken for a path or an option, and "/" or spaces are refused
// because agents put the name in download paths.
func ValidateVersion(v string) error {
	if v == "" {
		return messages.Invalidf("version must not be empty")
	}
	if len(v) > MaxVersionLen {
		return messages.Invalidf("invalid version %q: longer than %d bytes", v[:32]+"...", MaxVersionLen)
	}
	if !versionRE.MatchString(v) {
		return messages.Invalidf("invalid version %q: must be letters, digits and . _ + - starting with a letter or digit", v)
	}
	return nil
}

// notFound is the 404 of an unknown version.
func notFound(version string) error {
	return messages.NotFoundf("version '%s' not found in %s", version, messages.ObjectStoreAgentReleases)
}

func wrapObjErr(op, version string, err error) error {
	return messages.Unavailablef("%s %s in %s: %v", op, version, messages.ObjectStoreAgentReleases, err)
}
