package agentauth

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"kanade-backend/actors/clock"
	"kanade-backend/messages"
)

// Binding an enrollment token to a PC. The agent presenting an unbound
// enrollment token connects as a PC of unknown name (EnrollingPermissions)
// and is bound to the pc_id it runs as. A message does not say which
// connection sent it, so the backend asks the server instead: the upstream
// agent subscribes to logs.fetch.<its pc_id> as it starts, and the
// connection of the token holding exactly that subscription names the PC
// (the one its heartbeats are for). While unbound the connection may not
// publish anything, heartbeats included, so a token holder can never
// speak for another PC; its first heartbeat is refused and the next one,
// sent with its PC's own rights, goes through. Once bound, the token is
// that PC's credential: the connection is kicked, reconnects with the same
// token and gets its PC's rights (its subscriptions, refused while
// enrolling, are sent again by the client library on reconnect).
//
// A pc_id that already has a live credential is never taken over this
// way: the enrollment token is revoked instead (a re-imaged PC whose old
// credential still lives, or a stolen kitting token). One that has none
// (a PC still on the shared token, or whose credentials were all revoked)
// can be claimed by whoever holds an enrollment token, which is what an
// enrollment token is for.

// GroupAdder adds groups to a PC's agent_groups key (merging with what is
// there).
type GroupAdder func(ctx context.Context, pcID string, groups []string) error

// Auditor publishes one audit event.
type Auditor func(ctx context.Context, ev messages.AuditEvent) error

// EnrollerOptions configure StartEnroller.
type EnrollerOptions struct {
	Store  *Store
	Conns  Conns
	Kicker *Kicker
	Groups GroupAdder
	Audit  Auditor
	Clock  clock.Clock
	Logger *slog.Logger
	// Tick is how often the connections of pending enrollments are looked
	// at while there are some (default 1s).
	Tick time.Duration
}

// Enroller binds enrollment tokens. It implements Enrollments.
type Enroller struct {
	o EnrollerOptions

	mu      sync.Mutex
	pending map[string]time.Time // enrollment id → when its connection was authorized

	wake chan struct{}
	done chan struct{}
	wg   sync.WaitGroup
}

var _ Enrollments = (*Enroller)(nil)

// StartEnroller starts the matching loop.
func StartEnroller(o EnrollerOptions) *Enroller {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Tick <= 0 {
		o.Tick = time.Second
	}
	e := &Enroller{o: o, pending: map[string]time.Time{}, wake: make(chan struct{}, 1), done: make(chan struct{})}
	e.wg.Add(1)
	go e.loop()
	return e
}

// Stop ends the loop.
func (e *Enroller) Stop() {
	close(e.done)
	e.wg.Wait()
}

// Pending implements Enrollments: the callout authorized a connection with
// the unbound token id.
func (e *Enroller) Pending(id, _ string, _ uint64) {
	e.mu.Lock()
	e.pending[id] = e.o.Clock.Now()
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *Enroller) loop() {
	defer e.wg.Done()
	t := time.NewTicker(e.o.Tick)
	defer t.Stop()
	for {
		select {
		case <-e.done:
			return
		case <-e.wake:
		case <-t.C:
		}
		e.match()
	}
}

// match binds every pending enrollment whose connection has announced
// its pc_id.
func (e *Enroller) match() {
	now := e.o.Clock.Now()
	e.mu.Lock()
	ids := make(map[string]time.Time, len(e.pending))
	for id, at := range e.pending {
		ids[id] = at
	}
	e.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for id, since := range ids {
		conns, err := e.o.Conns.List(ctx, UserOfEnrollment(id), true)
		if err != nil {
			e.o.Logger.Warn("enrollment cannot list its connections", "enrollment", id, "err", err)
			continue
		}
		if len(conns) == 0 {
			// Gone, or not registered by the server yet: keep it a while.
			if now.Sub(since) > EnrollingExpiry {
				e.forget(id)
			}
			continue
		}
		if pcID, ok := announced(conns); ok {
			e.bind(ctx, id, pcID)
		}
	}
}

// announced is the one pc_id the connections of a token subscribed
// logs.fetch.<pc_id> for. A wildcard subscription, or several pc_ids,
// announce nothing.
func announced(conns []Conn) (string, bool) {
	pcID := ""
	for _, c := range conns {
		for _, s := range c.Subs {
			rest, ok := strings.CutPrefix(s, "logs.fetch.")
			if !ok {
				continue
			}
			if messages.ValidateToken("pc_id", rest) != nil || (pcID != "" && pcID != rest) {
				return "", false
			}
			pcID = rest
		}
	}
	return pcID, pcID != ""
}

func (e *Enroller) bind(ctx context.Context, id, pcID string) {
	log := e.o.Logger.With("enrollment", id, "pc_id", pcID)
	c, err := e.o.Store.Bind(ctx, id, pcID)
	if errors.Is(err, ErrNotBindable) {
		e.refuse(ctx, id, pcID, err)
		return
	}
	if err != nil {
		log.Error("binding enrollment failed; will retry", "err", err)
		return
	}
	e.forget(id)
	log.Info("agent enrolled")
	if len(c.Groups) > 0 && e.o.Groups != nil {
		if err := e.o.Groups(ctx, pcID, c.Groups); err != nil {
			log.Error("enrolled agent's groups not set", "groups", []string(c.Groups), "err", err)
		}
	}
	e.audit(ctx, messages.ActionAgentEnrolled, pcID, map[string]any{"credential": id, "groups": []string(c.Groups)})
	// Reconnecting gives the agent its own PC's rights.
	if _, err := e.o.Kicker.Kick(ctx, UserOfEnrollment(id)); err != nil {
		log.Warn("kicking the enrolled connection failed; it gets its PC's rights at its next connection", "err", err)
	}
}

// refuse revokes an enrollment token that tried to take a PC it may not
// (see above) and ends its connection, which would otherwise come back and
// try again forever.
func (e *Enroller) refuse(ctx context.Context, id, pcID string, why error) {
	log := e.o.Logger.With("enrollment", id, "pc_id", pcID)
	e.forget(id)
	if _, err := e.o.Store.Revoke(ctx, id, Match{Kind: KindEnrollment}, "enrollment refused: "+why.Error()); err != nil {
		log.Error("revoking the refused enrollment failed", "err", err)
	}
	log.Warn("enrollment refused and revoked", "reason", why)
	e.audit(ctx, messages.ActionEnrollmentRevoke, id, map[string]any{"pc_id": pcID, "reason": why.Error()})
	if _, err := e.o.Kicker.Kick(ctx, UserOfEnrollment(id)); err != nil {
		log.Warn("kicking the refused enrollment's connection failed", "err", err)
	}
}

func (e *Enroller) audit(ctx context.Context, action, target string, payload map[string]any) {
	if e.o.Audit == nil {
		return
	}
	ev := messages.AuditEvent{Actor: messages.ActorEnrollment, Action: action, Target: &target, Payload: payload, OccurredAt: e.o.Clock.Now()}
	if err := e.o.Audit(ctx, ev); err != nil {
		e.o.Logger.Error("audit of an enrollment failed", "action", action, "target", target, "err", err)
	}
}

func (e *Enroller) forget(id string) {
	e.mu.Lock()
	delete(e.pending, id)
	e.mu.Unlock()
}
