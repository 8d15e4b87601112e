package consul

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/register"
)

// Catalog adapts the Consul agent API to register.Catalog. Services are
// written to the local agent, which owns them and syncs them to the catalog,
// as Consul intends for services of the node the agent runs on.
type Catalog struct {
	api *api.Client
	// Timeout bounds each call, so a hung Consul fails fast and is retried.
	Timeout time.Duration
}

// NewCatalog wraps c.
func NewCatalog(c *api.Client) *Catalog { return &Catalog{api: c, Timeout: 10 * time.Second} }

// Services implements register.Catalog. It runs every drift check, and
// decodes only what it reads: Consul's client decodes each service in full
// (proxy, connect, weights, tagged addresses), which was a quarter of the
// agent's CPU in a burst of 200 starts.
func (c *Catalog) Services(ctx context.Context, node string) ([]register.Registered, error) {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	q := (&api.QueryOptions{Filter: fmt.Sprintf("Meta.%s == %q", register.MetaNode, node)}).WithContext(ctx)
	var svcs map[string]struct{ Meta map[string]string }
	if _, err := c.api.Raw().Query("/v1/agent/services", &svcs, q); err != nil {
		return nil, fmt.Errorf("list agent services: %w", err)
	}
	if len(svcs) == 0 {
		return nil, nil
	}
	var checks map[string]struct{ Status string }
	if _, err := c.api.Raw().Query("/v1/agent/checks", &checks, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
		return nil, fmt.Errorf("list agent checks: %w", err)
	}
	out := make([]register.Registered, 0, len(svcs))
	for id, s := range svcs {
		r := register.Registered{ID: id, ContainerID: s.Meta[register.MetaContainerID], Hash: s.Meta[register.MetaHash]}
		if ch, ok := checks[id+register.HealthCheckSuffix]; ok {
			r.HealthStatus = ch.Status
		}
		out = append(out, r)
	}
	return out, nil
}

// Register implements register.Catalog.
func (c *Catalog) Register(ctx context.Context, s register.Service) error {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	opts := api.ServiceRegisterOpts{ReplaceExistingChecks: true}.WithContext(ctx)
	return c.api.Agent().ServiceRegisterOpts(toRegistration(s), opts)
}

// Deregister implements register.Catalog.
func (c *Catalog) Deregister(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	err := c.api.Agent().ServiceDeregisterOpts(id, (&api.QueryOptions{}).WithContext(ctx))
	if isUnknown(err) {
		return nil
	}
	return err
}

// Owner implements register.Catalog.
func (c *Catalog) Owner(ctx context.Context, id string) (string, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	s, _, err := c.api.Agent().Service(id, (&api.QueryOptions{}).WithContext(ctx))
	if isUnknown(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read agent service %s: %w", id, err)
	}
	return s.Meta[register.MetaNode], true, nil
}

// UpdateHealth implements register.Catalog.
func (c *Catalog) UpdateHealth(ctx context.Context, h register.HealthMirror) error {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	return c.api.Agent().UpdateTTLOpts(h.CheckID, h.Output, h.Status, (&api.QueryOptions{}).WithContext(ctx))
}

// NodeAddress is the address the local Consul agent advertises, the natural
// address for services published on this host's ports.
func (c *Catalog) NodeAddress(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	// Agent().Self takes no context: its request would outlive the call.
	var self map[string]map[string]any
	if _, err := c.api.Raw().Query("/v1/agent/self", &self, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
		return "", fmt.Errorf("read consul agent self: %w", err)
	}
	addr, _ := self["Member"]["Addr"].(string)
	if addr == "" {
		return "", fmt.Errorf("consul agent reports no member address")
	}
	return addr, nil
}

func isUnknown(err error) bool {
	if err == nil {
		return false
	}
	var se api.StatusError
	if errors.As(err, &se) && se.Code == 404 {
		return true
	}
	return strings.Contains(err.Error(), "Unknown service")
}

func toRegistration(s register.Service) *api.AgentServiceRegistration {
	reg := &api.AgentServiceRegistration{
		ID:      s.ID,
		Name:    s.Name,
		Address: s.Address,
		Port:    s.Port,
		Tags:    s.Tags,
		Meta:    s.Meta,
	}
	if len(s.TaggedAddresses) > 0 {
		reg.TaggedAddresses = map[string]api.ServiceAddress{}
		for k, v := range s.TaggedAddresses {
			reg.TaggedAddresses[k] = api.ServiceAddress{Address: v.Address, Port: v.Port}
		}
	}
	for _, ch := range s.Checks {
		reg.Checks = append(reg.Checks, &api.AgentServiceCheck{
			CheckID:                        ch.ID,
			Name:                           ch.Name,
			HTTP:                           ch.HTTP,
			TCP:                            ch.TCP,
			GRPC:                           ch.GRPC,
			GRPCUseTLS:                     ch.GRPCUseTLS,
			TLSSkipVerify:                  ch.TLSSkipVerify,
			TTL:                            durationString(ch.TTL),
			Interval:                       durationString(ch.Interval),
			Timeout:                        durationString(ch.Timeout),
			DeregisterCriticalServiceAfter: durationString(ch.DeregisterCriticalFor),
			Status:                         ch.InitialStatus,
		})
	}
	if h := s.Health; h != nil {
		reg.Checks = append(reg.Checks, &api.AgentServiceCheck{
			CheckID: h.CheckID,
			Name:    "Docker HEALTHCHECK",
			TTL:     register.HealthMirrorTTL.String(),
			Status:  h.Status,
			Notes:   "Mirrors the container's Docker HEALTHCHECK; updated by the underlay agent.",
		})
	}
	return reg
}

func durationString(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}
