package testenv

import (
	"context"
	"fmt"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/go-connections/nat"
)

// createContainer creates c without registering cleanup, for benchmarks
// that manage many containers themselves.
func createContainer(ctx context.Context, d *client.Client, c Container) (string, error) {
	cfg := &container.Config{
		Image:       TestImage,
		Labels:      c.Labels,
		Env:         c.Env,
		Healthcheck: c.Healthcheck,
		Entrypoint:  c.Entrypoint,
	}
	hc := &container.HostConfig{}
	if c.RestartAlways {
		hc.RestartPolicy = container.RestartPolicy{Name: container.RestartPolicyAlways}
	}
	if len(c.Exposed) > 0 || len(c.Publish) > 0 {
		cfg.ExposedPorts = nat.PortSet{}
	}
	for _, p := range c.Exposed {
		cfg.ExposedPorts[nat.Port(p)] = struct{}{}
	}
	if len(c.Publish) > 0 {
		hc.PortBindings = nat.PortMap{}
		for cport, hport := range c.Publish {
			cfg.ExposedPorts[nat.Port(cport)] = struct{}{}
			hc.PortBindings[nat.Port(cport)] = []nat.PortBinding{{HostPort: hport}}
		}
	}
	var nc *network.NetworkingConfig
	if len(c.Networks) > 0 {
		hc.NetworkMode = container.NetworkMode(c.Networks[0])
		nc = &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{}}
		for _, n := range c.Networks[:1] {
			nc.EndpointsConfig[n] = endpoint(c, n)
		}
	}
	created, err := d.ContainerCreate(ctx, cfg, hc, nc, nil, c.Name)
	if err != nil {
		return "", err
	}
	// Docker 20.10 attaches only one network at create time.
	for _, n := range c.Networks[min(1, len(c.Networks)):] {
		if err := d.NetworkConnect(ctx, n, created.ID, endpoint(c, n)); err != nil {
			d.ContainerRemove(ctx, created.ID, container.RemoveOptions{Force: true})
			return "", fmt.Errorf("connect %s to %s: %w", c.Name, n, err)
		}
	}
	return created.ID, nil
}

func endpoint(c Container, n string) *network.EndpointSettings {
	ep := &network.EndpointSettings{}
	if ip := c.IPs[n]; ip != "" {
		ep.IPAMConfig = &network.EndpointIPAMConfig{}
		if strings.Contains(ip, ":") {
			ep.IPAMConfig.IPv6Address = ip
		} else {
			ep.IPAMConfig.IPv4Address = ip
		}
	}
	return ep
}

func containerListByLabel(key, value string) container.ListOptions {
	return container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", key+"="+value))}
}
