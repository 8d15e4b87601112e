package app

import (
	"log/slog"

	"github.com/docker/docker/client"
	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/dashboard"
	dadapter "github.com/underlay/underlay/internal/dashboard/adapter"
	"github.com/underlay/underlay/internal/scale"
)

// controlDashboard is what `underlay control` needs to serve the dashboard
// (/ui, /v1/cluster): its clients, its autoscaler and its API.
type controlDashboard struct {
	docker        *client.Client
	consul        *api.Client
	ctrl          *scale.Controller
	leadership    scale.Leadership // nil without --leader-election
	history       scale.HistoryLister
	historyPrefix string
	api           *scale.API
	apiCfg        scale.APIConfig
	// secureCookies marks the session cookie Secure always
	// (--secure-cookies).
	secureCookies bool
}

// newDashboard builds the dashboard over control's clients; its scale
// buttons go through control's own API, so its authentication and
// forwarding to the leader apply to them, its login and reads are held
// to the API's rate limits, and its event stream to its stream cap.
func newDashboard(d controlDashboard, log *slog.Logger, reg prometheus.Registerer) (*dashboard.Server, error) {
	src := dashboard.Sources{
		Swarm:   dadapter.NewSwarm(d.docker, log),
		Catalog: dadapter.NewCatalog(d.consul, log),
		Store:   dadapter.NewStore(consul.NewKV(d.consul), d.historyPrefix),
		Scaling: dadapter.NewScaling(d.ctrl, d.history, d.leadership),
	}
	cfg := dashboard.Config{Sources: src, ScaleAPI: d.api.Handler(), Version: Version, OpenReads: d.apiCfg.OpenReads, SecureCookies: d.secureCookies,
		LoginLimit: d.api.RateLimit, ReadLimit: d.api.ReadLimit, StreamLimit: d.api.LimitStreams, GuessLimit: d.api.GuessLimit, TokenFailed: d.api.TokenFailed,
		Client: d.api.Client}
	if d.apiCfg.Tokens != nil {
		cfg.Tokens = d.apiCfg.Tokens
	}
	return dashboard.New(cfg, log, reg)
}
