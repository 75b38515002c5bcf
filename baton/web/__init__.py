"""The reviewer inbox (`baton inbox serve`): sign in, see the gates waiting
for your roles, judge what the AI produced, decide."""
