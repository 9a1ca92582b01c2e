// The one in-memory form of a training example, whatever file format it came from: an optional
// system prompt and the turns of the dialogue, user and assistant alternating, ending with the
// assistant. Readers (data/reader.h) produce it; templates (data/template.h) turn it into tokens.
#pragma once

#include <string>
#include <vector>

namespace ift {

enum class Role { user, assistant };

struct Turn {
  Role role = Role::user;
  std::string text;
  // Alpaca's "input" (the context paired with the instruction) on a user turn; "" for none. Kept
  // apart because the alpaca template renders it under its own heading; other templates append it
  // to the user text after a blank line.
  std::string input;
};

struct Conversation {
  std::string system;        // "" when the sample has none (the template may supply a default)
  std::vector<Turn> turns;   // user, assistant, user, assistant, ...; never empty, ends with assistant
  std::string where;         // "FILE:LINE" of the record, for error messages
};

}  // namespace ift
