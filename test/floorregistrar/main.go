// Command floorregistrar is the floor of the registration benchmark: at each
// container start event it writes one registration to the local Consul
// agent, built from the event alone, with no read of Docker. It is not a
// registrar (it knows no address and checks nothing); it measures what any
// registrar driven by the start event pays on a machine at least — the
// event's delivery, the Consul agent's answer and its sync to the catalog.
//
// It registers the containers carrying -label, with the service name of
// their SERVICE_NAME label and the ID node:container:8080 that underlay
// gives the benchmark's containers, and deregisters them when they die. It
// logs each write as one JSON line, {"time":…,"msg":"registered","id":…},
// when the Consul agent has answered.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/hashicorp/consul/api"
)

func main() {
	consulAddr := flag.String("consul", "127.0.0.1:8500", "Consul agent HTTP address")
	label := flag.String("label", "", "register only containers with this label, key=value")
	node := flag.String("node", "floor", "first part of each service ID")
	flag.Parse()
	if err := run(*consulAddr, *label, *node); err != nil {
		fmt.Fprintln(os.Stderr, "floorregistrar:", err)
		os.Exit(1)
	}
}

func run(consulAddr, label, node string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return fmt.Errorf("docker client: %w", err)
	}
	cfg := api.DefaultConfig()
	cfg.Address = consulAddr
	c, err := api.NewClient(cfg)
	if err != nil {
		return fmt.Errorf("consul client: %w", err)
	}
	f := filters.NewArgs(filters.Arg("type", string(events.ContainerEventType)),
		filters.Arg("event", "start"), filters.Arg("event", "die"))
	if label != "" {
		f.Add("label", label)
	}
	msgs, errs := d.Events(ctx, events.ListOptions{Filters: f})
	var out sync.Mutex
	logf := func(msg, id string, err error) {
		rec := map[string]any{"time": time.Now(), "msg": msg, "id": id}
		if err != nil {
			rec["err"] = err.Error()
		}
		line, _ := json.Marshal(rec)
		out.Lock()
		defer out.Unlock()
		os.Stdout.Write(append(line, '\n'))
	}
	register := func(name string, labels map[string]string) {
		id := node + ":" + name + ":8080"
		err := c.Agent().ServiceRegisterOpts(&api.AgentServiceRegistration{ID: id, Name: labels["SERVICE_NAME"], Port: 8080},
			api.ServiceRegisterOpts{}.WithContext(ctx))
		if err != nil {
			logf("register failed", id, err)
			return
		}
		logf("registered", id, nil)
	}
	// Containers already running (the subscription above may have missed
	// their start): so the benchmark's first container is never lost.
	lf := filters.NewArgs()
	if label != "" {
		lf.Add("label", label)
	}
	list, err := d.ContainerList(ctx, container.ListOptions{Filters: lf})
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	for _, ct := range list {
		register(strings.TrimPrefix(ct.Names[0], "/"), ct.Labels)
	}
	logf("following docker events", "", nil)
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errs:
			return fmt.Errorf("docker events: %w", err)
		case m := <-msgs:
			name := m.Actor.Attributes["name"]
			switch m.Action {
			case events.ActionStart:
				go register(name, m.Actor.Attributes)
			case events.ActionDie:
				go func() {
					id := node + ":" + name + ":8080"
					if err := c.Agent().ServiceDeregisterOpts(id, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
						logf("deregister failed", id, err)
					}
				}()
			}
		}
	}
}
