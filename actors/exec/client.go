package exec

import (
	"context"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

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
	res, err := c.request(ctx, &Cancel{ExecID: execID})
	if err != nil {
		return CancelReply{}, err
	}
	reply, ok := res.(*CancelReply)
	if !ok {
		return CancelReply{}, fmt.Errorf("exec engine answered %T, want *exec.CancelReply", res)
	}
	return *reply, reply.Err
}

// Resume publishes an exec's first held wave past its gate; by is who
// resumes (initiated-by form).
func (c *Client) Resume(ctx context.Context, execID, by string) (ResumeReply, error) {
	res, err := c.request(ctx, &Resume{ExecID: execID, By: by})
	if err != nil {
		return ResumeReply{}, err
	}
	reply, ok := res.(*ResumeReply)
	if !ok {
		return ResumeReply{}, fmt.Errorf("exec engine answered %T, want *exec.ResumeReply", res)
	}
	return *reply, reply.Err
}

// Abort cancels an exec's held and pending waves and the exec.
func (c *Client) Abort(ctx context.Context, execID string) (CancelReply, error) {
	res, err := c.request(ctx, &Abort{ExecID: execID})
	if err != nil {
		return CancelReply{}, err
	}
	reply, ok := res.(*CancelReply)
	if !ok {
		return CancelReply{}, fmt.Errorf("exec engine answered %T, want *exec.CancelReply", res)
	}
	return *reply, reply.Err
}

func (c *Client) request(ctx context.Context, msg any) (any, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultClientTimeout
	}
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	if timeout <= 0 {
		return nil, messages.Unavailablef("exec engine not asked: %v", ctx.Err())
	}
	res, err := c.Root.RequestFuture(c.PID, msg, timeout).Result()
	if err != nil {
		return nil, messages.Unavailablef("exec engine did not answer within %v: %v", timeout.Round(time.Millisecond), err)
	}
	return res, nil
}
