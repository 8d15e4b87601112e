package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"
	"github.com/spf13/pflag"

	"github.com/underlay/underlay/deploy"
	"github.com/underlay/underlay/internal/app/agentflags"
)

// Stack services, as `docker stack deploy … underlay` names them.
const (
	StackAgentService   = deploy.StackName + "_agent"
	StackControlService = deploy.StackName + "_control"
)

// ControlPeerSecretFile is the file, in the lab's directory, holding the
// secret control instances sign forwarded scaling requests with.
const ControlPeerSecretFile = "control.peer-secret"

// ControlTokensFile is the file, in the lab's directory, holding the bearer
// token of the stack's control (AgentsStack).
const ControlTokensFile = "control.tokens"

// agentImage is the image the stack runs: underlay:VERSION, VERSION being
// what UnderlayBin says it is (scripts/build.sh builds both).
func (p *plan) agentImage(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, p.cfg.UnderlayBin, "version").Output()
	if err != nil {
		return "", fmt.Errorf("%s version: %w", p.cfg.UnderlayBin, err)
	}
	v, ok := strings.CutPrefix(strings.TrimSpace(string(out)), "underlay ")
	if !ok || v == "" {
		return "", fmt.Errorf("%s version: unexpected %q", p.cfg.UnderlayBin, out)
	}
	return "underlay:" + v, nil
}

// deployStack deploys deploy/stack.yml on the swarm as the README tells
// users: secrets made with the swarm's API (the lab's Consul has no ACLs:
// its token secrets hold an empty line, the anonymous token), then
// `docker stack deploy` run in node1 with the image and, from AgentArgs,
// an override file of UNDERLAY_* variables (--resolve-image never: the
// image was loaded into every node, no registry has it). It waits until an agent runs
// on every node and control on a manager. A second deploy of an unchanged
// stack changes nothing.
func (p *plan) deployStack(ctx context.Context, clients []*client.Client, image string) error {
	env, err := AgentEnv(p.cfg.AgentArgs)
	if err != nil {
		return err
	}
	mgr := clients[0]
	token, err := p.secret(ControlTokensFile)
	if err != nil {
		return err
	}
	peer, err := p.secret(ControlPeerSecretFile)
	if err != nil {
		return err
	}
	for name, data := range map[string]string{
		deploy.SecretAgentConsulToken:   "\n",
		deploy.SecretControlConsulToken: "\n",
		deploy.SecretControlTokens:      token + "\n",
		deploy.SecretControlPeerSecret:  peer + "\n",
	} {
		if err := ensureSecret(ctx, mgr, name, data); err != nil {
			return err
		}
	}
	dir := p.dir()
	stackFile, override := filepath.Join(dir, "stack.yml"), filepath.Join(dir, "stack.lab.yml")
	if err := os.WriteFile(stackFile, deploy.Stack, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(override, []byte(overrideFile(env)), 0o644); err != nil {
		return err
	}
	n := &p.nodes[0]
	cmd, err := p.prov.Command(ctx, p, n, []string{"env", "UNDERLAY_IMAGE=" + image, "CONSUL_HTTP_ADDR=127.0.0.1:" + fmt.Sprint(ConsulHTTPPort),
		"docker", "stack", "deploy", "--resolve-image", "never", "--compose-file", stackFile, "--compose-file", override, deploy.StackName})
	if err != nil {
		return err
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("node %s: docker stack deploy: %w\n%s", n.Name, err, out)
	}
	return poll(ctx, 90*time.Second, func() error {
		for i := range p.nodes {
			if err := stackTaskRunning(ctx, clients[i], StackAgentService); err != nil {
				return fmt.Errorf("node %s: %w", p.nodes[i].Name, err)
			}
		}
		for i := range p.nodes {
			if p.nodes[i].Role == RoleManager && stackTaskRunning(ctx, clients[i], StackControlService) == nil {
				return nil
			}
		}
		return fmt.Errorf("%s runs on no manager", StackControlService)
	}, func(err error) error { return fmt.Errorf("stack %s: %w", deploy.StackName, err) })
}

// secret returns the secret kept in file of the lab's directory (control's
// bearer token, its peer secret), made once per lab: 32 hex digits,
// readable by root only. A blank file (a write cut short) is no secret: it
// is made again. The file is replaced whole, never seen half written.
func (p *plan) secret(file string) (string, error) {
	p.secretMu.Lock()
	defer p.secretMu.Unlock()
	path := filepath.Join(p.dir(), file)
	if b, err := os.ReadFile(path); err == nil {
		if s := strings.TrimSpace(string(b)); s != "" {
			return s, nil
		}
	}
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	token := hex.EncodeToString(b)
	// A temporary file of its own: another process's lab up may be making
	// it too (the last rename wins, whole).
	f, err := os.CreateTemp(p.dir(), file+".*.tmp")
	if err != nil {
		return "", fmt.Errorf("write %s: %w", file, err)
	}
	tmp := f.Name()
	_, err = f.WriteString(token + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("write %s: %w", file, err)
	}
	return token, nil
}

func ensureSecret(ctx context.Context, c *client.Client, name, data string) error {
	have, err := c.SecretList(ctx, swarm.SecretListOptions{Filters: filters.NewArgs(filters.Arg("name", name))})
	if err != nil {
		return fmt.Errorf("list secrets: %w", err)
	}
	if slices.ContainsFunc(have, func(s swarm.Secret) bool { return s.Spec.Name == name }) {
		return nil
	}
	if _, err := c.SecretCreate(ctx, swarm.SecretSpec{Annotations: swarm.Annotations{Name: name}, Data: []byte(data)}); err != nil {
		return fmt.Errorf("create secret %s: %w", name, err)
	}
	return nil
}

// stackTaskRunning says whether the node of c runs a container of a stack
// service.
func stackTaskRunning(ctx context.Context, c *client.Client, service string) error {
	cs, err := c.ContainerList(ctx, container.ListOptions{Filters: filters.NewArgs(
		filters.Arg("label", "com.docker.swarm.service.name="+service), filters.Arg("status", "running"))})
	if err != nil {
		return err
	}
	if len(cs) == 0 {
		return fmt.Errorf("no running task of %s", service)
	}
	return nil
}

// AgentEnv turns agent flags (--name value, --name=value, or a lone
// --name for true) into the UNDERLAY_* variables the agent reads, one a
// flag (the agent sets each flag from its variable once). A list flag
// given more than once keeps every value: those the agent splits at
// commas (agentListFlag, by the agent's flag definitions) are joined
// with commas; one that takes each
// value whole cannot be carried twice and is refused. Any other flag
// given twice keeps the last value, as on the agent's command line.
func AgentEnv(args []string) (map[string]string, error) {
	flags := agentflags.FlagSet()
	env := map[string]string{}
	given := map[string]bool{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, ok := strings.CutPrefix(a, "--")
		if !ok || name == "" {
			return nil, fmt.Errorf("agent argument %q: want --flag, --flag value or --flag=value", a)
		}
		value := "true"
		if k, v, found := strings.Cut(name, "="); found {
			name, value = k, v
		} else if i+1 < len(args) && !strings.HasPrefix(args[i+1], "--") {
			value = args[i+1]
			i++
		}
		key := "UNDERLAY_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		switch kind := agentListFlag(flags, name); {
		case !given[name] || kind == notList:
			env[key] = value
		case kind == commaList:
			// An empty value adds nothing, on the command line too.
			if env[key] == "" {
				env[key] = value
			} else if value != "" {
				env[key] += "," + value
			}
		default:
			return nil, fmt.Errorf("agent flag --%s given more than once: the stack's agent reads it from %s, which carries one value", name, key)
		}
		given[name] = true
	}
	return env, nil
}

// listKind is how the agent takes a flag given more than once.
type listKind int

const (
	notList   listKind = iota // the last value wins
	commaList                 // values are split at commas and added up
	wholeList                 // each value is added whole, commas included
)

// agentListFlag says how the agent takes flag name given more than once,
// by its definition among the agent's flags (agentflags): a slice
// (stringSlice, intSlice...) or a map (stringToString...) splits each
// value, and UNDERLAY_<FLAG>, at commas; an array (stringArray, --label)
// takes each whole; any other keeps the last. internal/app's
// TestLabAgentEnv checks the variables set each as the command line does.
func agentListFlag(flags *pflag.FlagSet, name string) listKind {
	f := flags.Lookup(name)
	if f == nil {
		return notList // the agent refuses it, as on its command line
	}
	switch typ := f.Value.Type(); {
	case strings.HasSuffix(typ, "Slice"), strings.HasPrefix(typ, "stringTo"):
		return commaList
	case strings.HasSuffix(typ, "Array"):
		return wholeList
	}
	return notList
}

// overrideFile is a compose file adding env to the stack's agent.
func overrideFile(env map[string]string) string {
	var b strings.Builder
	b.WriteString("# Written by underlay lab: the lab's agent flags.\nversion: \"3.8\"\nservices:\n  agent:\n    environment:\n")
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "      %s: %q\n", k, env[k])
	}
	if len(env) == 0 {
		b.WriteString("      {}\n")
	}
	return b.String()
}

// errNoAgentImage says how to make the image the stack needs.
var errNoAgentImage = errors.New("not in the machine's dockerd: build it with scripts/build.sh (make image)")
