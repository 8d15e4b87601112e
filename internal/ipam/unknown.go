package ipam

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
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

// unmarshalBlockDoc reads a block document, keeping the members this
// version does not know in Unknown, the document's and each record's.
//
// Every allocation reads its block, and every sweep all of them: a
// document of known members only, the rule until a newer version writes
// one, is read in one strict pass; only a document that pass refuses is
// read again, member by member.
func unmarshalBlockDoc(raw []byte) (BlockDoc, error) {
	var doc BlockDoc
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err == nil {
		if _, err := dec.Token(); err == io.EOF {
			return doc, nil
		}
	}
	// Unknown members, or a document json.Unmarshal refuses (its error
	// says why, as before).
	doc = BlockDoc{}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return BlockDoc{}, err
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return BlockDoc{}, err
	}
	doc.Unknown = unknownMembers(top, blockMember)
	for name, v := range top {
		if !strings.EqualFold(name, "allocs") {
			continue
		}
		var recs map[string]map[string]json.RawMessage
		if err := json.Unmarshal(v, &recs); err != nil {
			return BlockDoc{}, err
		}
		for addr, rec := range recs {
			if u := unknownMembers(rec, allocMember); u != nil {
				al := doc.Allocs[addr]
				al.Unknown = u
				doc.Allocs[addr] = al
			}
		}
	}
	return doc, nil
}

// marshalBlockDoc writes doc with the unknown members it was read with.
func marshalBlockDoc(doc BlockDoc) ([]byte, error) {
	b, err := json.Marshal(doc)
	if err != nil || !doc.hasUnknown() {
		return b, err
	}
	// Rare (a newer version shares the pool): the records that carry
	// unknown members get them back, then the document its own.
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, err
	}
	var recs map[string]json.RawMessage
	if err := json.Unmarshal(top["allocs"], &recs); err != nil {
		return nil, err
	}
	for addr, al := range doc.Allocs {
		if len(al.Unknown) > 0 {
			if recs[addr], err = withUnknown(recs[addr], al.Unknown, allocMember); err != nil {
				return nil, err
			}
		}
	}
	if top["allocs"], err = json.Marshal(recs); err != nil {
		return nil, err
	}
	if b, err = json.Marshal(top); err != nil {
		return nil, err
	}
	return withUnknown(b, doc.Unknown, blockMember)
}

// hasUnknown says whether doc or one of its records was read with members
// this version does not know.
func (doc BlockDoc) hasUnknown() bool {
	if len(doc.Unknown) > 0 {
		return true
	}
	for _, al := range doc.Allocs {
		if len(al.Unknown) > 0 {
			return true
		}
	}
	return false
}

// unknownMembers returns the members of obj that are not known, nil when
// there are none.
func unknownMembers(obj map[string]json.RawMessage, isKnown func(string) bool) map[string]json.RawMessage {
	var out map[string]json.RawMessage
	for name, v := range obj {
		if isKnown(name) {
			continue
		}
		if out == nil {
			out = map[string]json.RawMessage{}
		}
		out[name] = v
	}
	return out
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
	if len(obj) < 2 || obj[0] != '{' || obj[len(obj)-1] != '}' {
		return nil, errors.New("write back unknown members: not a JSON object")
	}
	b, err := json.Marshal(extra) // sorted by name: one document, one encoding
	if err != nil {
		return nil, err
	}
	if len(obj) == 2 { // {}
		return b, nil
	}
	out := append(obj[:len(obj)-1:len(obj)-1], ',')
	return append(out, b[1:]...), nil
}
