package exec

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"kanade-backend/actors/actorsys"
	"kanade-backend/messages"
)

// DefaultClientTimeout bounds a Client's wait for the engine. A 10 000-PC
// fan-out takes well under a second, but a request may queue behind a
// burst of others (they are handled in batches, one after the other).
const DefaultClientTimeout = 30 * time.Second

// Client calls the engine from outside the actor system (HTTP handlers),
// waiting on a future. Actors must not use it: they send the request with
// their own context and receive the reply as a message.
type Client struct {
	Root    *actor.RootContext
	PID     *actor.PID
	Timeout time.Duration
}

// Exec fires a job and returns the engine's answer.
func (c *Client) Exec(ctx context.Context, req *messages.ExecRequest) (messages.ExecResponse, error) {
	res, err := c.request(ctx, req)
	if err != nil {
		return messages.ExecResponse{}, err
	}
	reply, ok := res.(*messages.ExecReply)
	if !ok {
		return messages.ExecResponse{}, fmt.Errorf("exec engine answered %T, want *messages.ExecReply", res)
	}
	return reply.Response, reply.Err
}

// Cancel cancels an exec's pending waves.
func (c *Client) Cancel(ctx context.Context, execID string) (CancelReply, error) {
	r, err := ask[CancelReply](ctx, c, &Cancel{ExecID: execID})
	return r, errOf(err, r.Err)
}

// Resume publishes an exec's first held wave past its gate; by is who
// resumes (initiated-by form).
func (c *Client) Resume(ctx context.Context, execID, by string) (ResumeReply, error) {
	r, err := ask[ResumeReply](ctx, c, &Resume{ExecID: execID, By: by})
	return r, errOf(err, r.Err)
}

// Abort cancels an exec's held and pending waves and the exec.
func (c *Client) Abort(ctx context.Context, execID string) (CancelReply, error) {
	r, err := ask[CancelReply](ctx, c, &Abort{ExecID: execID})
	return r, errOf(err, r.Err)
}

// ask sends msg and returns the engine's *R answer.
func ask[R any](ctx context.Context, c *Client, msg any) (R, error) {
	var zero R
	res, err := c.request(ctx, msg)
	if err != nil {
		return zero, err
	}
	reply, ok := res.(*R)
	if !ok {
		return zero, fmt.Errorf("exec engine answered %T, want %T", res, reply)
	}
	return *reply, nil
}

func errOf(askErr, replyErr error) error {
	if askErr != nil {
		return askErr
	}
	return replyErr
}

func (c *Client) request(ctx context.Context, msg any) (any, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultClientTimeout
	}
	res, timeout, err := actorsys.Ask(ctx, c.Root, c.PID, msg, timeout)
	if errors.Is(err, actorsys.ErrNotAsked) {
		return nil, messages.Unavailablef("exec engine not asked: %v", ctx.Err())
	}
	if err != nil {
		return nil, messages.Unavailablef("exec engine did not answer within %v: %v", timeout.Round(time.Millisecond), err)
	}
	return res, nil
}
