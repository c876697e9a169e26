/** Builds the public URLs of the API and of box previews from the configuration. */
export class Urls {
  readonly scheme: string;
  readonly portSuffix: string;
  readonly api: string;

  constructor(
    readonly baseDomain: string,
    publicUrl: string,
    port: number,
  ) {
    const u = new URL(publicUrl || `http://localhost:${port}`);
    this.scheme = u.protocol.replace(':', '');
    this.portSuffix = u.port ? `:${u.port}` : '';
    this.api = u.origin;
  }

  /** `http://<name>.<base>:8080/`: the box's first port. */
  box(name: string): string {
    return `${this.scheme}://${name}.${this.baseDomain}${this.portSuffix}/`;
  }

  /** `http://<port>.<name>.<base>:8080/`: any declared port. */
  port(name: string, port: number): string {
    return `${this.scheme}://${port}.${name}.${this.baseDomain}${this.portSuffix}/`;
  }
}
