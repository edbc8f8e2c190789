package schedule

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"kanade-backend/actors/actorsys"
	"kanade-backend/messages"
)

// Client asks the supervisor from outside the actor system (HTTP
// handlers). It waits on futures, which handlers may do and actors may not.
type Client struct {
	Root *actor.RootContext
	PID  *actor.PID
	// FireTimeout is the supervisor's; a manual run waits a little longer.
	FireTimeout time.Duration
}

// statusTimeout bounds a status or summary question; the supervisor
// answers from memory.
const statusTimeout = 5 * time.Second

func (c *Client) ask(ctx context.Context, msg any, timeout time.Duration) (any, error) {
	if c == nil || c.PID == nil {
		return nil, messages.Unavailablef("the scheduler is not running")
	}
	res, timeout, err := actorsys.Ask(ctx, c.Root, c.PID, msg, timeout)
	if errors.Is(err, actorsys.ErrNotAsked) {
		return nil, ctx.Err()
	}
	if errors.Is(err, actor.ErrTimeout) {
		return nil, messages.Unavailablef("the scheduler did not answer within %s", timeout)
	}
	if err != nil {
		return nil, fmt.Errorf("ask the scheduler: %w", err)
	}
	return res, nil
}

// Status returns one schedule's status; an error wrapping
// messages.ErrNotFound when the scheduler does not know it.
func (c *Client) Status(ctx context.Context, id string) (Status, error) {
	res, err := c.ask(ctx, &statusRequest{id: id}, statusTimeout)
	if err != nil {
		return Status{}, err
	}
	r, ok := res.(*statusReply)
	if !ok {
		return Status{}, fmt.Errorf("scheduler status: unexpected answer %T", res)
	}
	return r.status, r.err
}

// Run fires a schedule now through the normal dedup path and returns the
// tick's outcome.
func (c *Client) Run(ctx context.Context, id string) (Tick, error) {
	ft := c.FireTimeout
	if ft <= 0 {
		ft = DefaultFireTimeout
	}
	res, err := c.ask(ctx, &runRequest{id: id}, ft+ioTimeout+statusTimeout)
	if err != nil {
		return Tick{}, err
	}
	switch r := res.(type) {
	case *runReply:
		return r.tick, r.err
	case *Tick:
		return *r, nil
	}
	return Tick{}, fmt.Errorf("scheduler run: unexpected answer %T", res)
}

// Summary counts the schedules the scheduler holds.
func (c *Client) Summary(ctx context.Context) (Summary, error) {
	res, err := c.ask(ctx, &summaryRequest{}, statusTimeout)
	if err != nil {
		return Summary{}, err
	}
	s, ok := res.(*Summary)
	if !ok {
		return Summary{}, fmt.Errorf("scheduler summary: unexpected answer %T", res)
	}
	return *s, nil
}
