package sim

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/messages"
)

// Agents with their own credentials (Config.Credentials, kanade-fleet
// --credentials): the backend's NATS gives each token only its own PC's
// subjects, so the shared connection and wildcard subscriptions of the
// package doc cannot be used. Each agent then has what a real agent has:
// its own connection with its own token, subscriptions to commands.all,
// commands.pc.<pc_id>, kill.*, logs.fetch.<pc_id> and commands.group.<g>
// for its groups, following a watch of its own agent_groups key, and it
// publishes its heartbeats and results on that connection. What reaches a
// connection is for its agent alone, so the router hands it to that agent
// only. Reads for the version pin go through the first agent's connection
// (every agent may read script_current and script_status, and they would
// all read the same values).

// Credential is one agent's pc_id and NATS token.
type Credential struct {
	PcID  string
	Token string
}

// ReadCredentials reads the kitting CSV of POST /api/agents/credentials:
// a header line pc_id,token, then one line per PC.
func ReadCredentials(r io.Reader) ([]Credential, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = 2
	rows, err := cr.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("credentials CSV: %w", err)
	}
	if len(rows) == 0 || !slices.Equal(rows[0], []string{"pc_id", "token"}) {
		return nil, errors.New("credentials CSV: want a header line pc_id,token (the answer of POST /api/agents/credentials)")
	}
	out := make([]Credential, 0, len(rows)-1)
	seen := map[string]bool{}
	for i, row := range rows[1:] {
		c := Credential{PcID: strings.TrimSpace(row[0]), Token: strings.TrimSpace(row[1])}
		if err := messages.ValidateToken("pc_id", c.PcID); err != nil {
			return nil, fmt.Errorf("credentials CSV line %d: %w", i+2, err)
		}
		if c.Token == "" {
			return nil, fmt.Errorf("credentials CSV line %d: pc_id %s has no token", i+2, c.PcID)
		}
		if seen[c.PcID] {
			return nil, fmt.Errorf("credentials CSV line %d: pc_id %s is listed twice", i+2, c.PcID)
		}
		seen[c.PcID] = true
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("credentials CSV: no PC listed")
	}
	return out, nil
}

// dialConcurrency bounds the connections being opened at once: enough to
// start a thousand agents in seconds without a thousand simultaneous
// handshakes queueing at the server's auth callout.
const dialConcurrency = 32

// connectTimeout bounds one agent's connection, authorization included:
// the server asks the backend's auth callout before it answers, and a
// thousand agents starting at once queue there.
const connectTimeout = 20 * time.Second

// dialAttempts is how often one agent tries to connect at start.
const dialAttempts = 5

// link is one agent's own connection and what arrives on it.
type link struct {
	pcID string
	nc   *nats.Conn
	in   chan *nats.Msg
	subs []*nats.Subscription

	mu     sync.Mutex
	groups map[string]*nats.Subscription // commands.group.<g> by group

	watch  jetstream.KeyWatcher
	cancel context.CancelFunc
	done   chan struct{} // the reader and the watch loop have ended
	wg     sync.WaitGroup
}

// linkBuffer is how many messages may wait for one agent: a burst of
// Commands is a handful per agent, never thousands.
const linkBuffer = 1024

// dialLinks connects every agent with its own token, in parallel.
func dialLinks(ctx context.Context, url string, creds []Credential, log *slog.Logger) ([]*link, error) {
	links := make([]*link, len(creds))
	errs := make([]error, len(creds))
	sem := make(chan struct{}, dialConcurrency)
	var wg sync.WaitGroup
	for i, c := range creds {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			l := &link{pcID: c.PcID, in: make(chan *nats.Msg, linkBuffer), groups: map[string]*nats.Subscription{}, done: make(chan struct{})}
			var nc *nats.Conn
			var err error
			for attempt := 1; ; attempt++ {
				nc, err = nats.Connect(url, nats.Token(c.Token), nats.Name(c.PcID), nats.Timeout(connectTimeout),
					nats.MaxReconnects(-1), nats.ReconnectWait(time.Second), nats.ReconnectJitter(500*time.Millisecond, time.Second),
					nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
						log.Warn("agent connection error", "pc_id", c.PcID, "err", err)
					}))
				// A refused token is final; anything else (the server's
				// first PING overtaking a slow authorization, a reset) is
				// worth another try, as a real agent would.
				if err == nil || errors.Is(err, nats.ErrAuthorization) || attempt == dialAttempts || ctx.Err() != nil {
					break
				}
				time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
			}
			if err != nil {
				errs[i] = fmt.Errorf("connect agent %s: %w", c.PcID, err)
				return
			}
			l.nc = nc
			links[i] = l
		}()
		if ctx.Err() != nil {
			break
		}
	}
	wg.Wait()
	if err := errors.Join(append(errs, ctx.Err())...); err != nil {
		for _, l := range links {
			if l != nil {
				l.nc.Close()
			}
		}
		return nil, err
	}
	return links, nil
}

// listen subscribes the agent's own subjects and starts handing what
// arrives to handle, in arrival order.
func (l *link) listen(handle func(pcID string, m *nats.Msg)) error {
	for _, s := range []string{messages.SubjectCommandsAll, messages.CommandsPCSubject(l.pcID), messages.KillSubject("*"), messages.LogsFetchSubject(l.pcID)} {
		sub, err := l.nc.ChanSubscribe(s, l.in)
		if err != nil {
			return fmt.Errorf("agent %s: subscribe %s: %w", l.pcID, s, err)
		}
		l.subs = append(l.subs, sub)
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			select {
			case <-l.done:
				return
			case m := <-l.in:
				handle(l.pcID, m)
			}
		}
	}()
	return nil
}

// watchGroups follows the agent's own agent_groups key, as the upstream
// agent does, keeping a commands.group.<g> subscription per group; it
// returns once the current value has been applied.
func (l *link) watchGroups(ctx context.Context, log *slog.Logger, send func(groupsUpdate)) error {
	js, err := jetstream.New(l.nc)
	if err != nil {
		return err
	}
	kv, err := js.KeyValue(ctx, messages.BucketAgentGroups)
	if err != nil {
		return fmt.Errorf("agent %s: open %s: %w", l.pcID, messages.BucketAgentGroups, err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	w, err := kv.Watch(wctx, l.pcID)
	if err != nil {
		cancel()
		return fmt.Errorf("agent %s: watch its groups: %w", l.pcID, err)
	}
	l.watch, l.cancel = w, cancel
	initial := make(chan struct{})
	l.wg.Add(1)
	go func(ready chan struct{}) {
		defer l.wg.Done()
		for {
			var e jetstream.KeyValueEntry
			var ok bool
			select {
			case <-wctx.Done():
				return
			case e, ok = <-w.Updates():
			}
			switch {
			case !ok:
				return
			case e == nil:
				if ready != nil {
					close(ready)
					ready = nil
				}
				continue
			}
			var groups []string
			if e.Operation() == jetstream.KeyValuePut {
				ag, err := messages.ParseAgentGroups(e.Value())
				if err != nil {
					log.Warn("ignoring undecodable agent_groups value", "pc_id", l.pcID, "err", err)
					continue
				}
				groups = messages.NormalizeGroups(ag.Groups)
			}
			l.setGroups(groups, log)
			send(groupsUpdate{pcID: l.pcID, groups: groups})
		}
	}(initial)
	select {
	case <-initial:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("agent %s: groups: %w", l.pcID, ctx.Err())
	}
}

// setGroups subscribes the groups joined and drops the ones left, then
// flushes, so that a group Command published after the change reaches
// the agent.
func (l *link) setGroups(groups []string, log *slog.Logger) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for g, sub := range l.groups {
		if !slices.Contains(groups, g) {
			_ = sub.Unsubscribe()
			delete(l.groups, g)
		}
	}
	for _, g := range groups {
		if l.groups[g] != nil {
			continue
		}
		sub, err := l.nc.ChanSubscribe(messages.CommandsGroupSubject(g), l.in)
		if err != nil {
			log.Warn("agent cannot subscribe to its group", "pc_id", l.pcID, "group", g, "err", err)
			continue
		}
		l.groups[g] = sub
	}
	if err := l.nc.Flush(); err != nil {
		log.Debug("flush after a groups change", "pc_id", l.pcID, "err", err)
	}
}

// close stops the agent's reader and watch and closes its connection
// after sending what it published.
func (l *link) close(ctx context.Context) error {
	if l.watch != nil {
		_ = l.watch.Stop()
		l.cancel()
	}
	close(l.done)
	l.wg.Wait()
	err := flush(ctx, l.nc)
	l.nc.Close()
	if errors.Is(err, nats.ErrConnectionClosed) {
		err = nil
	}
	return err
}
