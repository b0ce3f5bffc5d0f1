"""Pure decision machines. Time is passed in as ``now``; nothing here sleeps or reads a clock."""
