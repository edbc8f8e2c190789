package agentio

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"kanade-backend/http/httpx"
	"kanade-backend/http/internal/opaudit"
	"kanade-backend/messages"
)

// Limits of POST /api/run.
const (
	// DefaultRunTimeoutSecs is timeout_secs when the body omits it.
	DefaultRunTimeoutSecs = 60
	// MaxRunTimeoutSecs keeps one request from holding a connection for
	// days; a longer job belongs in the catalog and POST /api/exec.
	MaxRunTimeoutSecs = 24 * 60 * 60
	// ResultGrace is added to the script timeout: the agent needs time to
	// start the shell, kill it at the timeout and publish the result.
	ResultGrace = 10 * time.Second
	// maxAuditScript bounds the script text kept in the audit payload.
	maxAuditScript = 4096
)

// RunRequest is the body of POST /api/run.
type RunRequest struct {
	PcID string `json:"pc_id"`
	// Shell is powershell (aliases ps, pwsh) or cmd; default powershell.
	Shell       *string `json:"shell"`
	Script      string  `json:"script"`
	TimeoutSecs *uint64 `json:"timeout_secs"`
	// JobID, when set, is sent as the Command's job_id: the handle
	// kill.<job_id> stops the run with.
	JobID      *string `json:"job_id"`
	JitterSecs *uint64 `json:"jitter_secs"`
}

// command validates the request and builds the Command to publish.
func (req RunRequest) command(requestID string) (messages.Command, error) {
	if err := messages.ValidateToken("pc_id", req.PcID); err != nil {
		return messages.Command{}, err
	}
	shell, err := parseShell(req.Shell)
	if err != nil {
		return messages.Command{}, err
	}
	if strings.TrimSpace(req.Script) == "" {
		return messages.Command{}, messages.Invalidf("script must not be empty")
	}
	timeout := uint64(DefaultRunTimeoutSecs)
	if req.TimeoutSecs != nil {
		timeout = *req.TimeoutSecs
	}
	if timeout < 1 || timeout > MaxRunTimeoutSecs {
		return messages.Command{}, messages.Invalidf("invalid timeout_secs %d: must be between 1 and %d", timeout, MaxRunTimeoutSecs)
	}
	if req.JitterSecs != nil && *req.JitterSecs > MaxRunTimeoutSecs {
		return messages.Command{}, messages.Invalidf("invalid jitter_secs %d: must be at most %d", *req.JitterSecs, MaxRunTimeoutSecs)
	}
	jitter := req.JitterSecs
	if jitter != nil && *jitter == 0 {
		// No jitter is null on the wire: an agent draws from [0, n), an
		// empty range for 0.
		jitter = nil
	}
	var jobID *string
	if req.JobID != nil && *req.JobID != "" {
		// It becomes the subject kill.<job_id> the agent listens on.
		if err := messages.ValidateToken("job_id", *req.JobID); err != nil {
			return messages.Command{}, err
		}
		jobID = req.JobID
	}
	return messages.Command{
		ID:          messages.AdhocJobID,
		Version:     messages.AdhocVersion,
		RequestID:   requestID,
		JobID:       jobID,
		Shell:       shell,
		Script:      req.Script,
		TimeoutSecs: timeout,
		JitterSecs:  jitter,
		RunAs:       messages.RunAsSystem,
	}, nil
}

// parseShell accepts upstream's names and aliases; the error text is
// upstream's, which the CLI prints as is.
func parseShell(s *string) (messages.Shell, error) {
	if s == nil {
		return messages.ShellPowerShell, nil
	}
	switch strings.ToLower(strings.TrimSpace(*s)) {
	case "powershell", "ps", "pwsh":
		return messages.ShellPowerShell, nil
	case "cmd":
		return messages.ShellCmd, nil
	}
	// The exact text of api.md: clients of the upstream API match it.
	return "", messages.Invalidf("unknown shell")
}

// resultWait is how long /api/run waits for the agent's result.
func resultWait(cmd messages.Command) time.Duration {
	d := time.Duration(cmd.TimeoutSecs)*time.Second + ResultGrace
	if cmd.JitterSecs != nil {
		d += time.Duration(*cmd.JitterSecs) * time.Second
	}
	return d
}

func (h *handlers) run(w http.ResponseWriter, r *http.Request) error {
	var req RunRequest
	if err := httpx.DecodeJSON(w, r, &req); err != nil {
		return err
	}
	cmd, err := req.command(uuid.NewString())
	if err != nil {
		return err
	}
	ctx := r.Context()
	payload, err := json.Marshal(cmd)
	if err != nil {
		return fmt.Errorf("encode command: %w", err)
	}
	start := time.Now()
	resSubject := messages.ResultsSubject(cmd.RequestID)
	sub, err := h.nc.SubscribeSync(resSubject)
	if err != nil {
		h.metrics.observe("run", outcomeError, 0)
		return messages.Unavailablef("subscribe %s: %v", resSubject, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	// The subscription must be registered on the server before the
	// Command goes out, or a fast agent's result is published to nobody.
	if err := h.flush(ctx); err != nil {
		h.metrics.observe("run", outcomeError, 0)
		return err
	}
	subject := messages.CommandsPCSubject(req.PcID)
	if err := h.nc.Publish(subject, payload); err != nil {
		h.metrics.observe("run", outcomeError, 0)
		return messages.Unavailablef("publish %s: %v", subject, err)
	}
	if err := h.flush(ctx); err != nil {
		h.metrics.observe("run", outcomeError, 0)
		return err
	}
	h.auditRun(r, cmd, req.PcID, subject)

	wait := resultWait(cmd)
	wctx, cancel := h.waitContext(ctx, wait)
	defer cancel()
	msg, err := sub.NextMsgWithContext(wctx)
	if err != nil {
		if err, ok := h.waitEnded(r, "run"); ok {
			return err
		}
		if errors.Is(err, context.DeadlineExceeded) {
			h.metrics.observe("run", outcomeTimeout, time.Since(start).Seconds())
			return messages.Timeoutf("no result from %s within %s (timeout_secs %d + %s) on %s; the agent may be offline",
				req.PcID, wait, cmd.TimeoutSecs, ResultGrace, resSubject)
		}
		h.metrics.observe("run", outcomeError, time.Since(start).Seconds())
		return messages.Unavailablef("waiting for %s: %v", resSubject, err)
	}
	var res messages.ExecResult
	if err := json.Unmarshal(msg.Data, &res); err != nil {
		h.metrics.observe("run", outcomeError, time.Since(start).Seconds())
		return messages.Unavailablef("agent %s sent an undecodable result on %s: %v", req.PcID, resSubject, err)
	}
	h.metrics.observe("run", outcomeOK, time.Since(start).Seconds())
	httpx.WriteJSON(w, http.StatusOK, res)
	return nil
}

func (h *handlers) flush(ctx context.Context) error {
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := h.nc.FlushWithContext(fctx); err != nil {
		return messages.Unavailablef("NATS unavailable: %v", err)
	}
	return nil
}

func (h *handlers) auditRun(r *http.Request, cmd messages.Command, pcID, subject string) {
	script := cmd.Script
	truncated := false
	if len(script) > maxAuditScript {
		n := maxAuditScript
		for n > 0 && !utf8.RuneStart(script[n]) {
			n-- // never cut a character in half
		}
		script, truncated = script[:n], true
	}
	sum := sha256.Sum256([]byte(cmd.Script))
	var execID any // null when the run has no kill handle
	if cmd.JobID != nil {
		execID = *cmd.JobID
	}
	opaudit.Record(r.Context(), h.audit, h.log, messages.ActionExec, messages.AdhocJobID, map[string]any{
		"exec_id":          execID,
		"version":          cmd.Version,
		"target_count":     1,
		"subjects":         []string{subject},
		"wave_mode":        false,
		"adhoc":            true,
		"request_id":       cmd.RequestID,
		"pc_id":            pcID,
		"shell":            string(cmd.Shell),
		"timeout_secs":     cmd.TimeoutSecs,
		"script":           script,
		"script_truncated": truncated,
		"script_sha256":    hex.EncodeToString(sum[:]),
	})
}
