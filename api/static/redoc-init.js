/* Before ReDoc loads: its side menu shows a logo from cdn.redoc.ly; keep every image on this host. */
"use strict";
(() => {
  const blank = "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' width='1' height='1'/%3E";
  const local = (value) => (/^(https?:)?\/\//i.test(String(value)) ? blank : value);
  const setAttribute = Element.prototype.setAttribute;
  Element.prototype.setAttribute = function (name, value) {
    const src = this instanceof HTMLImageElement && String(name).toLowerCase() === "src";
    return setAttribute.call(this, name, src ? local(value) : value);
  };
  const property = Object.getOwnPropertyDescriptor(HTMLImageElement.prototype, "src");
  Object.defineProperty(HTMLImageElement.prototype, "src", {
    configurable: true,
    enumerable: property.enumerable,
    get() { return property.get.call(this); },
    set(value) { property.set.call(this, local(value)); },
  });
})();
