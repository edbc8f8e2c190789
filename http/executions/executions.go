// Package executions serves the exec API: firing a job
// (POST /api/exec/{job_id}), following, killing and cancelling what was
// fired, and re-running it where it failed. Firing and cancelling go
// through the exec engine actor, which owns fan-outs and rollout waves;
// the reads come from the store the engine and the results projector
// write.
package executions

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/actors/audit"
	"kanade-backend/actors/clock"
	execengine "kanade-backend/actors/exec"
	"kanade-backend/http/auth"
	"kanade-backend/http/httpx"
	"kanade-backend/http/internal/opaudit"
	"kanade-backend/http/server"
	"kanade-backend/http/targets"
	"kanade-backend/messages"
	"kanade-backend/storage"
)

// Audit actions beyond the upstream list, like their routes: a wave
// cancel, and an operator's resume or abort of a rollout held at its gate.
const (
	ActionExecCancel     = "exec_cancel"
	ActionExecWaveResume = "exec_wave_resume"
	ActionExecWaveAbort  = "exec_wave_abort"
)

// natsTimeout bounds the flush of a kill and the audit publish.
const natsTimeout = 5 * time.Second

// Engine is the exec engine as the API uses it.
type Engine interface {
	Exec(ctx context.Context, req *messages.ExecRequest) (messages.ExecResponse, error)
	Cancel(ctx context.Context, execID string) (execengine.CancelReply, error)
	Resume(ctx context.Context, execID, by string) (execengine.ResumeReply, error)
	Abort(ctx context.Context, execID string) (execengine.CancelReply, error)
}

var _ Engine = (*execengine.Client)(nil)

// Publisher publishes core NATS messages (kill).
type Publisher interface {
	Publish(subject string, data []byte) error
	FlushTimeout(timeout time.Duration) error
}

// Auditor publishes audit events.
type Auditor interface {
	Publish(ctx context.Context, ev messages.AuditEvent) error
}

var _ Auditor = (*audit.Publisher)(nil)

// Buckets opens KV buckets by name: the job catalog, to tell an unknown
// job (404) from a target that reaches nobody (400).
type Buckets interface {
	KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error)
}

var _ Buckets = (jetstream.JetStream)(nil)

// Deps is what the routes need.
type Deps struct {
	Engine Engine
	NATS   Publisher
	Store  *storage.Store
	KV     Buckets
	Audit  Auditor
	Clock  clock.Clock
	Logger *slog.Logger
}

type handlers struct{ Deps }

// Register adds the routes.
func Register(r *server.Router, d Deps) {
	if d.Clock == nil {
		d.Clock = clock.Real{}
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	h := &handlers{d}
	r.API("POST /api/exec/{job_id}", h.exec)
	// Upstream's kill path names an exec_id despite living under /jobs:
	// agents listen on kill.<exec_id> (defect 16).
	r.API("POST /api/jobs/{exec_id}/kill", h.kill)
	r.API("POST /api/executions/{exec_id}/kill", h.kill)
	r.API("GET /api/executions", h.list)
	r.API("GET /api/executions/{exec_id}", h.get)
	r.API("POST /api/executions/{exec_id}/cancel", h.cancel)
	r.API("POST /api/executions/{exec_id}/rerun-failed", h.rerunFailed)
	r.API("POST /api/executions/{exec_id}/waves/resume", h.resumeWaves)
	r.API("POST /api/executions/{exec_id}/waves/abort", h.abortWaves)
}

// operatorExtra is what the exec audit event learns about the caller: the
// sub and source every operator event carries (auth.OperatorEvent owns the
// rule; the engine publishes the event itself).
func operatorExtra(ctx context.Context) map[string]any {
	return auth.OperatorEvent(ctx, "", "", nil).Payload
}

// exec fires a job with the plan in the body (an empty body is an empty
// plan, refused for its missing target like {}).
func (h *handlers) exec(w http.ResponseWriter, r *http.Request) error {
	jobID := r.PathValue("job_id")
	if err := messages.ValidateToken("job id", jobID); err != nil {
		return err
	}
	var plan messages.FanoutPlan
	if err := httpx.DecodeOptionalJSON(w, r, &plan); err != nil {
		return err
	}
	if err := h.refuseEmptyTarget(r.Context(), jobID, plan); err != nil {
		return err
	}
	resp, err := h.Engine.Exec(r.Context(), &messages.ExecRequest{
		JobID: jobID, Plan: plan, Actor: messages.ActorOperator,
		InitiatedBy: auth.InitiatedBy(r.Context()), AuditExtra: operatorExtra(r.Context()),
	})
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// refuseEmptyTarget answers 400 for an exec whose target matches no known
// PC: upstream accepted it, published to nobody and reported a green
// "completed 0/0" (or, for an unknown pc_id, an exec that expired), so a
// typo in a group name went unnoticed. An invalid plan or an unknown job is
// left to the engine, so that its errors (404 first) keep their order and
// texts. Operator execs only: a schedule's fire may target a group that
// fills later (the schedules API warns instead).
func (h *handlers) refuseEmptyTarget(ctx context.Context, jobID string, plan messages.FanoutPlan) error {
	if plan.Validate() != nil {
		return nil
	}
	target := targets.ReachedTarget(plan)
	if ok, err := targets.Matches(ctx, h.Store.R, target); err != nil || ok {
		return err
	}
	if h.KV != nil {
		kv, err := h.KV.KeyValue(ctx, messages.BucketJobs)
		if err != nil {
			return messages.Unavailablef("job catalog (KV %s) unavailable: %v", messages.BucketJobs, err)
		}
		if _, err := kv.Get(ctx, jobID); errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil // the engine answers 404
		} else if err != nil {
			return messages.Unavailablef("read job '%s' from catalog: %v", jobID, err)
		}
	}
	p, err := targets.Resolve(ctx, h.Store.R, target, h.Clock.Now())
	if err != nil {
		return fmt.Errorf("preview target of exec %s: %w", jobID, err)
	}
	return messages.Invalidf("%s", p.Refusal())
}

func execIDFrom(r *http.Request) (string, error) {
	id := r.PathValue("exec_id")
	return id, messages.ValidateToken("exec id", id)
}

// kill publishes an empty message on kill.<exec_id>; agents running a
// Command of that exec stop it. It does not require the exec to be known
// here: Commands sent by other tools carry exec ids too.
func (h *handlers) kill(w http.ResponseWriter, r *http.Request) error {
	id, err := execIDFrom(r)
	if err != nil {
		return err
	}
	subject := messages.KillSubject(id)
	if err := h.NATS.Publish(subject, nil); err != nil {
		return messages.Unavailablef("publish %s: %v", subject, err)
	}
	if err := h.NATS.FlushTimeout(natsTimeout); err != nil {
		return messages.Unavailablef("publish %s: delivery not confirmed: %v", subject, err)
	}
	h.audit(r.Context(), messages.ActionExecKill, id, map[string]any{"exec_id": id})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// CancelResponse answers a cancel: the exec as it is afterwards and how
// many waves were cancelled.
type CancelResponse struct {
	storage.Execution
	CancelledWaves int `json:"cancelled_waves"`
}

// cancel cancels an exec's pending rollout waves.
func (h *handlers) cancel(w http.ResponseWriter, r *http.Request) error {
	id, err := execIDFrom(r)
	if err != nil {
		return err
	}
	reply, err := h.Engine.Cancel(r.Context(), id)
	if err != nil {
		return err
	}
	h.audit(r.Context(), ActionExecCancel, id, map[string]any{
		"exec_id": id, "cancelled_waves": reply.CancelledWaves, "status": reply.Status})
	ex, err := loadExecution(r.Context(), h.Store, id)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, CancelResponse{Execution: *ex, CancelledWaves: reply.CancelledWaves})
	return nil
}

// WavesRequest is the body of a resume or abort: the operator's reason,
// kept in the audit event (required to resume: a gate is overridden).
type WavesRequest struct {
	Reason string `json:"reason"`
}

// maxReason bounds the reason's length (it goes into the audit log).
const maxReason = 1000

func readWavesRequest(w http.ResponseWriter, r *http.Request, required bool) (WavesRequest, error) {
	var req WavesRequest
	if err := httpx.DecodeOptionalJSON(w, r, &req); err != nil {
		return req, err
	}
	req.Reason = strings.TrimSpace(req.Reason)
	switch {
	case required && req.Reason == "":
		return req, messages.Invalidf("reason is required: say why the wave goes out although its gate is not met")
	case len(req.Reason) > maxReason:
		return req, messages.Invalidf("reason is too long: %d bytes, at most %d", len(req.Reason), maxReason)
	}
	return req, nil
}

// WavesResponse answers a resume or abort: the exec afterwards with its
// waves (the same shape as GET /api/executions/{exec_id} without pcs).
type WavesResponse struct {
	storage.Execution
	Waves []execengine.WaveRow `json:"waves"`
	// Resumed is the wave a resume published (or left pending to retry).
	Resumed *execengine.ResumeReply `json:"resumed,omitempty"`
	// CancelledWaves is how many waves an abort cancelled.
	CancelledWaves int `json:"cancelled_waves"`
}

func (h *handlers) wavesResponse(ctx context.Context, id string, resp WavesResponse) (WavesResponse, error) {
	ex, err := loadExecution(ctx, h.Store, id)
	if err != nil {
		return resp, err
	}
	resp.Execution = *ex
	resp.Waves, err = execengine.LoadWaveRows(ctx, h.Store.R, id)
	return resp, err
}

// resumeWaves publishes the exec's first held wave past its gate.
func (h *handlers) resumeWaves(w http.ResponseWriter, r *http.Request) error {
	id, err := execIDFrom(r)
	if err != nil {
		return err
	}
	req, err := readWavesRequest(w, r, true)
	if err != nil {
		return err
	}
	reply, err := h.Engine.Resume(r.Context(), id, auth.InitiatedBy(r.Context()))
	if err != nil {
		return err
	}
	h.audit(r.Context(), ActionExecWaveResume, id, map[string]any{"exec_id": id, "wave_index": reply.WaveIndex,
		"group": reply.Group, "reason": req.Reason, "published": reply.Published})
	resp, err := h.wavesResponse(r.Context(), id, WavesResponse{Resumed: &reply})
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// abortWaves cancels the exec's held and pending waves and the exec.
func (h *handlers) abortWaves(w http.ResponseWriter, r *http.Request) error {
	id, err := execIDFrom(r)
	if err != nil {
		return err
	}
	req, err := readWavesRequest(w, r, false)
	if err != nil {
		return err
	}
	reply, err := h.Engine.Abort(r.Context(), id)
	if err != nil {
		return err
	}
	payload := map[string]any{"exec_id": id, "cancelled_waves": reply.CancelledWaves, "status": reply.Status}
	if req.Reason != "" {
		payload["reason"] = req.Reason
	}
	h.audit(r.Context(), ActionExecWaveAbort, id, payload)
	resp, err := h.wavesResponse(r.Context(), id, WavesResponse{CancelledWaves: reply.CancelledWaves})
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// rerunFailed fires the exec's job again at the PCs that failed or never
// answered: target {pcs}, rollout dropped (the waves have served their
// purpose), jitter kept. The manifest is read at fire time, as for any
// exec, so a fixed script is what re-runs.
func (h *handlers) rerunFailed(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	id, ex, rows, err := h.execWithPCs(r)
	if err != nil {
		return err
	}
	var pcs []string
	for _, p := range rows {
		if p.State == StateNeverAnswered || p.State == StateAnswered && *p.ExitCode != 0 {
			pcs = append(pcs, p.PcID)
		}
	}
	if len(pcs) == 0 {
		return messages.Invalidf("execution '%s' has nothing to re-run: no PC failed, and none has missed the deadline %s",
			id, ex.DeadlineAt.UTC().Format(time.RFC3339))
	}
	var orig messages.FanoutPlan
	if err := json.Unmarshal(ex.Plan, &orig); err != nil {
		return fmt.Errorf("decode plan of exec %s: %w", id, err)
	}
	extra := operatorExtra(ctx)
	extra["rerun_of"] = id
	resp, err := h.Engine.Exec(ctx, &messages.ExecRequest{
		JobID: ex.JobID, Plan: messages.FanoutPlan{Target: messages.Target{Pcs: pcs}, Jitter: orig.Jitter},
		Actor: messages.ActorOperator, InitiatedBy: auth.InitiatedBy(ctx), AuditExtra: extra,
	})
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// execWithPCs loads the exec named by the path and the state of each of
// its PCs.
func (h *handlers) execWithPCs(r *http.Request) (string, *storage.Execution, []PCStatus, error) {
	id, err := execIDFrom(r)
	if err != nil {
		return "", nil, nil, err
	}
	ex, err := loadExecution(r.Context(), h.Store, id)
	if err != nil {
		return "", nil, nil, err
	}
	pcs, err := pcStatuses(r.Context(), h.Store, ex, h.Clock.Now())
	if err != nil {
		return "", nil, nil, err
	}
	return id, ex, pcs, nil
}

// statuses are the values of executions.status, for filter validation.
var statuses = []string{storage.ExecPending, storage.ExecRunning, storage.ExecCompleted,
	storage.ExecFailed, storage.ExecExpired, storage.ExecCancelled, storage.ExecHeld}

// list answers execs newest first with their progress counters.
func (h *handlers) list(w http.ResponseWriter, r *http.Request) error {
	page, err := httpx.ParsePage(r)
	if err != nil {
		return err
	}
	qs := r.URL.Query()
	var rows []storage.Execution
	q := h.Store.R.NewSelect().Model(&rows).ExcludeColumn("manifest")
	// A job id is a subject token: anything else (a NUL byte) is refused,
	// not handed to the database.
	jobID, err := httpx.QueryToken(r, "job_id")
	if err != nil {
		return err
	}
	if jobID != "" {
		q = q.Where("job_id = ?", jobID)
	}
	if v := qs.Get("status"); v != "" {
		if !slices.Contains(statuses, v) {
			return messages.Invalidf("invalid status %q: want one of %s", v, strings.Join(statuses, ", "))
		}
		q = q.Where("status = ?", v)
	}
	initiatedBy, err := httpx.QueryText(r, "initiated_by")
	if err != nil {
		return err
	}
	if initiatedBy != "" {
		q = q.Where("initiated_by = ?", initiatedBy)
	}
	total, err := q.OrderExpr("created_at DESC, exec_id DESC").Limit(int64(page.Limit)).Offset(int64(page.Offset)).ScanAndCount(r.Context())
	if err != nil {
		return fmt.Errorf("list executions: %w", err)
	}
	httpx.WriteList(w, rows, int(total))
	return nil
}

// Detail is GET /api/executions/{exec_id}: the executions row, the
// manifest as fired, one row per PC and the rollout waves.
type Detail struct {
	storage.Execution
	Manifest json.RawMessage      `json:"manifest"`
	Pcs      []PCStatus           `json:"pcs"`
	Waves    []execengine.WaveRow `json:"waves"`
	Summary  Summary              `json:"summary"`
	// HoldReason is why the exec is held (its first held wave's gate).
	HoldReason *string `json:"hold_reason,omitempty"`
}

// Summary counts the per-PC rows by state.
type Summary struct {
	Answered      int `json:"answered"`
	Succeeded     int `json:"succeeded"`
	Failed        int `json:"failed"`
	Pending       int `json:"pending"`
	NeverAnswered int `json:"never_answered"`
}

func (h *handlers) get(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	id, ex, pcs, err := h.execWithPCs(r)
	if err != nil {
		return err
	}
	d := Detail{Execution: *ex, Manifest: ex.Manifest, Pcs: pcs}
	if len(d.Manifest) == 0 {
		d.Manifest = json.RawMessage("null")
	}
	if d.Waves, err = execengine.LoadWaveRows(ctx, h.Store.R, id); err != nil {
		return err
	}
	for _, w := range d.Waves {
		if w.State == storage.WaveHeld && w.Reason != nil {
			d.HoldReason = w.Reason
			break
		}
	}
	for _, p := range pcs {
		switch p.State {
		case StateAnswered:
			d.Summary.Answered++
			if *p.ExitCode == 0 {
				d.Summary.Succeeded++
			} else {
				d.Summary.Failed++
			}
		case StatePending:
			d.Summary.Pending++
		case StateNeverAnswered:
			d.Summary.NeverAnswered++
		}
	}
	httpx.WriteJSON(w, http.StatusOK, d)
	return nil
}

func loadExecution(ctx context.Context, st *storage.Store, id string) (*storage.Execution, error) {
	ex := new(storage.Execution)
	err := st.R.NewSelect().Model(ex).Where("exec_id = ?", id).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, messages.NotFoundf("execution '%s' not found", id)
	}
	if err != nil {
		return nil, fmt.Errorf("load exec %s: %w", id, err)
	}
	return ex, nil
}

// audit records the operator event of a change already made.
func (h *handlers) audit(ctx context.Context, action, target string, payload map[string]any) {
	opaudit.Record(ctx, h.Audit, h.Logger, action, target, payload)
}
