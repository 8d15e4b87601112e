package ipam

import (
	"encoding/json"
	"slices"
	"strings"
)

// blockMember and allocMember say whether this version reads a member of
// the block document, or of one of its records, called name: their json
// tags, matched ignoring case as encoding/json matches them (EqualFold).
// Every other member is kept as Unknown and written back.
func blockMember(name string) bool { return known(name, "node", "allocs") }
func allocMember(name string) bool { return known(name, "node", "at", "kind", "gen") }

func known(name string, tags ...string) bool {
	return slices.ContainsFunc(tags, func(t string) bool { return strings.EqualFold(name, t) })
}

// blockFields and allocFields are BlockDoc and Alloc without their JSON
// methods, for those methods to encode and decode the known members with.
type (
	blockFields BlockDoc
	allocFields Alloc
)

// MarshalJSON writes doc with its unknown members.
func (doc BlockDoc) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(blockFields(doc))
	if err != nil {
		return nil, err
	}
	return withUnknown(b, doc.Unknown, blockMember)
}

// UnmarshalJSON reads doc, keeping the members it does not know in
// doc.Unknown.
func (doc *BlockDoc) UnmarshalJSON(b []byte) error {
	var f blockFields
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	unknown, err := unknownMembers(b, blockMember)
	if err != nil {
		return err
	}
	*doc = BlockDoc(f)
	doc.Unknown = unknown
	return nil
}

// MarshalJSON writes al with its unknown members.
func (al Alloc) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(allocFields(al))
	if err != nil {
		return nil, err
	}
	return withUnknown(b, al.Unknown, allocMember)
}

// UnmarshalJSON reads al, keeping the members it does not know in
// al.Unknown.
func (al *Alloc) UnmarshalJSON(b []byte) error {
	var f allocFields
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	unknown, err := unknownMembers(b, allocMember)
	if err != nil {
		return err
	}
	*al = Alloc(f)
	al.Unknown = unknown
	return nil
}

// unknownMembers returns the members of the JSON object raw that are not
// known, nil when there are none (or raw is null).
func unknownMembers(raw []byte, isKnown func(string) bool) (map[string]json.RawMessage, error) {
	var all map[string]json.RawMessage
	if err := json.Unmarshal(raw, &all); err != nil {
		return nil, err
	}
	for name := range all {
		if isKnown(name) {
			delete(all, name)
		}
	}
	if len(all) == 0 {
		return nil, nil
	}
	return all, nil
}

// withUnknown returns obj, a JSON object as json.Marshal wrote it, with
// the members of unknown added after its own, but those that are known: a
// second member of a known name would be read instead of obj's.
func withUnknown(obj []byte, unknown map[string]json.RawMessage, isKnown func(string) bool) ([]byte, error) {
	extra := make(map[string]json.RawMessage, len(unknown))
	for name, v := range unknown {
		if !isKnown(name) {
			extra[name] = v
		}
	}
	if len(extra) == 0 {
		return obj, nil
	}
	b, err := json.Marshal(extra) // sorted by name: one document, one encoding
	if err != nil {
		return nil, err
	}
	if len(obj) <= 2 { // {}
		return b, nil
	}
	out := append(obj[:len(obj)-1:len(obj)-1], ',')
	return append(out, b[1:]...), nil
}
