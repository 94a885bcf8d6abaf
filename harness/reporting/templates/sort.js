// Sortable tables without dependencies: click a header to sort by that column (numbers by data-value).
document.querySelectorAll("table.sortable").forEach((table) => {
  table.querySelectorAll("thead th").forEach((header, column) => {
    header.tabIndex = 0;
    const sort = () => {
      const ascending = header.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("thead th").forEach((th) => th.removeAttribute("aria-sort"));
      header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      const numeric = header.dataset.type === "number";
      const key = (row) => {
        const cell = row.children[column];
        const raw = cell.dataset.value ?? cell.textContent.trim();
        const value = numeric ? parseFloat(raw) : raw.toLowerCase();
        return numeric && Number.isNaN(value) ? (ascending ? Infinity : -Infinity) : value;
      };
      const body = table.tBodies[0];
      [...body.rows]
        .sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (ascending ? 1 : -1))
        .forEach((row) => body.appendChild(row));
    };
    header.addEventListener("click", sort);
    header.addEventListener("keydown", (event) => { if (event.key === "Enter") sort(); });
  });
});

// The header's disclosure menus (they work without this): one open at a time; Escape or a click elsewhere closes them.
const menus = [...document.querySelectorAll("details.menu")];
const closeMenus = (except) => menus.forEach((menu) => { if (menu !== except) menu.open = false; });
menus.forEach((menu) => menu.addEventListener("toggle", () => { if (menu.open) closeMenus(menu); }));
document.addEventListener("click", (event) => { if (!event.target.closest("details.menu")) closeMenus(null); });
document.addEventListener("keydown", (event) => {
  const open = menus.find((menu) => menu.open);
  if (event.key === "Escape" && open) { open.open = false; open.querySelector("summary").focus(); }
});
