package adapter

import (
	"context"
	"time"

	"github.com/underlay/underlay/internal/dashboard"
	"github.com/underlay/underlay/internal/scale"
)

// Scaling adapts the autoscaler of a control instance to
// dashboard.Scaling.
type Scaling struct {
	ctrl    *scale.Controller
	history scale.HistoryLister
	leader  scale.Leadership
}

// NewScaling reads ctrl, its history and its leadership (nil without
// leader election).
func NewScaling(ctrl *scale.Controller, history scale.HistoryLister, leader scale.Leadership) *Scaling {
	return &Scaling{ctrl: ctrl, history: history, leader: leader}
}

// Services implements dashboard.Scaling.
func (s *Scaling) Services() []scale.ServiceInfo { return s.ctrl.Services() }

// History implements dashboard.Scaling.
func (s *Scaling) History(ctx context.Context, service string) ([]scale.Record, []scale.BadRecord, error) {
	if s.history == nil {
		return nil, nil, nil
	}
	return s.history.List(ctx, service)
}

// Control implements dashboard.Scaling.
func (s *Scaling) Control(ctx context.Context) dashboard.ControlInfo {
	c := dashboard.ControlInfo{Leading: s.ctrl.Leading(), DryRun: s.ctrl.DryRun()}
	if s.leader != nil {
		lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		c.Leader, _ = s.leader.Leader(lctx)
	}
	return c
}
