// Offers the browser's own time zone first: an empty time-zone field gets it,
// and it heads the field's suggestions. The server still validates the zone.
const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
if (zone) {
  for (const input of document.querySelectorAll("input[data-time-zone]")) {
    const list = input.list;
    if (list) {
      const option = [...list.options].find((o) => o.value === zone) ?? Object.assign(document.createElement("option"), { value: zone });
      option.label = `${zone} (this browser)`;
      list.prepend(option);
    }
    if (!input.value) input.value = zone;
  }
}
